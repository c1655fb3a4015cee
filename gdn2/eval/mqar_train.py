"""MQAR: train a small model on freshly generated data and report its recall accuracy.

Zoology's protocol at one setting: a 2-layer model is trained on batches of ``mqar_batch`` drawn
fresh at every step (never the same sequence twice), with the loss only at the answer positions,
AdamW and a cosine schedule (or a constant one) after a linear warm-up; the accuracy is measured on a held-out set
generated from a different seed, at the same (sequence length, number of pairs).

    config = mqar_config("gdn2")                        # or "kda", "gdn", "deltanet", "gla", "attention"
    result = train_mqar(config, seq_len=64, num_kv_pairs=4, steps=300)
    result.accuracy

Logits are computed at the answer positions only, so Zoology's vocabulary of 8,192 costs no
more on a CPU than a small one.

Budgets: the defaults (300 steps of 32 sequences) run in about a minute per model on one CPU
core and check the pipeline, not recall: measured on CPU at T=32, P=4, vocabulary 128, 800
steps of 64 gave attention 37% and GDN-2 7%, both still climbing. Zoology-level accuracies
need on the order of 10^4 steps (a GPU); compare models only at a budget where attention
reaches ~100%.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .likelihood import progress_bar
from .mqar import IGNORE_INDEX, MQARData, mixture_rows, mqar_batch, mqar_mixture_batch

ATTENTION = "attention"
# Zoology's attention baseline: a short convolution (kernel 4, as the linear mixers') on q, k and v
# and no rotary embedding (its BaseConv before attention, no positions), which plain attention here
# lacked when it learned MQAR only at some rates and seeds (T = 128 with 32 pairs, H100, 2026-12-06);
# without positions, testing past the trained lengths rotates nothing it has not seen
ATTENTION_CONV = "attention_conv"
ATTENTIONS = (ATTENTION, ATTENTION_CONV)
ZOOLOGY_VOCAB = 8192


def mqar_mixers() -> List[str]:
    """Names accepted by ``mqar_config``: the linear mixer presets, ``attention`` and ``attention_conv``."""
    return _linear_mixers() + list(ATTENTIONS)


def _linear_mixers() -> List[str]:
    from ..layers import MIXER_PRESETS
    return list(MIXER_PRESETS)


def mqar_config(mixer: str = "gdn2", pattern: Optional[str] = None, *, vocab_size: int = ZOOLOGY_VOCAB,
                hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, **overrides):
    """A small ``GDN2Config`` for MQAR (the ``tiny`` preset resized).

    Args:
        mixer: a linear mixer preset (``gdn2``, ``kda``, ``gdn``, ``deltanet``, ``gla``, ...),
            ``attention`` (full softmax attention in every layer, i.e. ``pattern="A"``) or
            ``attention_conv`` (Zoology's: a short convolution on q, k, v and no RoPE,
            ``attn_conv_size=4, attn_rope=False``).
        pattern: the layer pattern; default ``"L"`` (``"A"`` for the attentions), e.g. ``"LA"``.
        vocab_size: the MQAR vocabulary (must exceed the sequence length); Zoology's 8,192.
        hidden_size: the model width; heads of ``hidden_size // num_heads`` for both layer kinds.
        num_layers: blocks (Zoology: 2).
        overrides: any other ``GDN2Config`` field.
    """
    from ..models import GDN2Config

    if mixer in ATTENTIONS:
        if mixer == ATTENTION_CONV:
            overrides = {"attn_conv_size": 4, "attn_rope": False, **overrides}
        mixer, pattern = "gdn2", pattern or "A"
    elif mixer not in _linear_mixers():
        raise ValueError(f"unknown MQAR mixer {mixer!r}; choose from {', '.join(mqar_mixers())}")
    head = hidden_size // num_heads
    settings = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                    pattern=pattern or "L", mixer=mixer, num_heads=num_heads, head_k_dim=head, head_v_dim=head,
                    num_attention_heads=num_heads, head_dim=head, intermediate_size=2 * hidden_size)
    return GDN2Config.from_preset("tiny", **{**settings, **overrides})


def describe(config) -> str:
    """``attention`` (``attention_conv`` with short convolutions) for an all-attention model, else the
    mixer and, if not all ``L``, the pattern."""
    if "L" not in config.pattern:
        if set(config.pattern) == {"A"}:
            return ATTENTION_CONV if getattr(config, "attn_conv_size", 0) else ATTENTION
        return config.pattern
    return config.mixer if set(config.pattern) == {"L"} else f"{config.mixer}/{config.pattern}"


@dataclass
class MQARResult:
    model: str
    seq_len: int
    num_kv_pairs: int
    accuracy: float
    steps: int
    lr: float
    final_loss: float
    num_parameters: int
    seconds: float
    losses: List[float] = field(default_factory=list, repr=False)
    # every tested (seq_len, num_kv_pairs), the headline one included
    accuracies: Dict[Tuple[int, int], float] = field(default_factory=dict, repr=False)
    # model built, compiled (with ``compile``) and its first step taken: what a later model of the
    # same shape in the same process mostly does not pay again
    first_step_seconds: float = 0.0

    def row(self) -> dict:
        """Everything but the loss curve and the other tested settings."""
        return {k: v for k, v in asdict(self).items() if k not in ("losses", "accuracies")}


def derive_seed(*parts) -> int:
    """A 63-bit seed from the parts (train and test streams never share a seed)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# the learning rate after the warm-up, as the floor of the project's warm-up + cosine schedule
# (gdn2.train.optim): cosine to 0 (Zoology's) or held at the peak
SCHEDULE_FLOOR = {"cosine": 0.0, "constant": 1.0}
SCHEDULES = tuple(SCHEDULE_FLOOR)


def _answer_batch(data: MQARData, pin: bool = False, rows: Optional[Sequence[Tuple[int, int, int]]] = None):
    """``(inputs [N, T], answer positions [P] into the flattened [N * T], their targets [P])``,
    found on the host where the batch is made (page-locked for a non-blocking copy when ``pin``),
    so a step selects the answer logits without reading a size back from the GPU. With ``rows``
    (``mixture_rows``: first row, end row, length) one such triple per group of rows, each cut to
    its length: the padding after a group's sequences is never computed."""
    groups = [data] if rows is None else [MQARData(data.inputs[a:b, :t], data.labels[a:b, :t]) for a, b, t in rows]
    out = []
    for part in groups:
        labels = part.labels.flatten()
        where = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        out += [part.inputs.contiguous(), where, labels[where]]
    return tuple(x.pin_memory() for x in out) if pin else tuple(out)


def _answer_logits(model, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits ``[P, V]`` (float32) at the answer positions of an ``_answer_batch`` tuple, group after
    group (one model call a group, one output projection for all)."""
    hidden = torch.cat([model.model(x).flatten(0, 1).index_select(0, w) for x, w in zip(batch[0::3], batch[1::3])])
    return model.lm_head(hidden).float()


def _answer_loss(model, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over every answer of an ``_answer_batch`` tuple."""
    return F.cross_entropy(_answer_logits(model, batch), torch.cat(batch[2::3]))


@torch.no_grad()
def evaluate_mqar(model, seq_len: int, num_kv_pairs: int, num_examples: int = 256, seed: int = 0,
                  batch_size: int = 64, power_a: float = 0.01) -> float:
    """Accuracy at the answer positions on ``num_examples`` held-out sequences."""
    was_training = model.training
    model.eval()
    data = mqar_batch(num_examples, seq_len, num_kv_pairs, model.config.vocab_size, power_a, seed=derive_seed(seed, "test"))
    device = model.lm_head.weight.device
    correct = total = 0
    for i in range(0, num_examples, batch_size):
        batch = tuple(x.to(device) for x in _answer_batch(
            MQARData(data.inputs[i:i + batch_size], data.labels[i:i + batch_size])))
        targets = batch[2]
        correct += int((_answer_logits(model, batch).argmax(-1) == targets).sum())
        total += targets.numel()
    model.train(was_training)
    return correct / total


def _training_batches(steps: int, workers: int, make: Callable[[int], MQARData]) -> Iterator[MQARData]:
    """``make(step)`` for every step in order, computed up to ``2 * workers`` steps ahead."""
    if workers <= 0:
        yield from map(make, range(steps))
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead = deque(pool.submit(make, step) for step in range(min(2 * workers, steps)))
        for step in range(len(ahead), steps + len(ahead)):
            data = ahead.popleft().result()
            if step < steps:
                ahead.append(pool.submit(make, step))
            yield data


def compile_step(fn: Callable, device_type: str, warm_inputs: Optional[tuple] = None) -> Callable:
    """``torch.compile(fn)`` for a training step, on CUDA replayed from CUDA graphs (small models'
    steps are otherwise all kernel launches and Python). One eager no-grad call on ``warm_inputs``
    first, so that the caches layers fill on first use (chunk tables) do not live in the graphs'
    memory pool. Dynamo's state is reset first: every model a process trains is another graph of
    the same code, and past Dynamo's recompile limit (8) a later model would run eagerly unnoticed
    (the reset also frees the earlier models' CUDA graphs)."""
    if warm_inputs is not None:
        with torch.no_grad():
            fn(*warm_inputs)
    torch.compiler.reset()
    return torch.compile(fn, mode="reduce-overhead" if device_type == "cuda" else None)


def mqar_step(model, optimizer, device: Union[str, torch.device], amp: bool = False, compile: bool = False,
              warm_batch: Optional[tuple] = None) -> Callable[..., torch.Tensor]:
    """``step(*batch)``: one optimizer step of ``train_mqar`` on an ``_answer_batch`` tuple (answer-position
    cross-entropy, bfloat16 autocast when ``amp``, gradient clipping at 1, ``optimizer.step()``; the
    scheduler is the caller's), returning the loss as a detached tensor it will not overwrite.
    ``compile``: the loss compiled by ``compile_step`` (warmed up on ``warm_batch``)."""
    device_type = torch.device(device).type

    def answer_loss(*batch):
        # autocast is entered per step: its cache of low-precision weight copies lives as long as
        # the context, so one context around the whole loop would train on the initial weights
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            return _answer_loss(model, batch)

    graphs = compile and device_type == "cuda"
    if compile:
        answer_loss = compile_step(answer_loss, device_type,
                                   None if warm_batch is None else tuple(x.to(device) for x in warm_batch))

    def step(*batch):
        if graphs:  # the previous replay's outputs (loss, gradients) have been consumed
            torch.compiler.cudagraph_mark_step_begin()
        loss = answer_loss(*batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach().clone() if graphs else loss.detach()  # a replay reuses its output
    return step


def check_settings(vocab_size: int, settings: Sequence[Tuple[int, int]],
                   mixture: Sequence[Tuple[int, int, float]] = (), power_a: float = 0.01) -> None:
    """Raise ``ValueError`` naming the first ``(seq_len, num_kv_pairs)`` of ``settings`` or of a
    training ``mixture`` that MQAR's rules (``mqar_batch``'s) or the vocabulary (above every
    seq_len, Zoology's rule) reject: the one check ``train_mqar`` and the command lines make."""
    for t, pairs in [*settings, *((t, pairs) for t, pairs, _ in mixture)]:
        if vocab_size <= t:
            raise ValueError(f"vocab_size {vocab_size} must exceed seq_len {t} (Zoology's rule)")
        mqar_batch(1, t, pairs, vocab_size, power_a)


def train_mqar(config, seq_len: int = 64, num_kv_pairs: int = 4, steps: int = 300, lr: float = 3e-3, seed: int = 0,
               *, batch_size: int = 32, num_test: int = 256, warmup_steps: Optional[int] = None,
               weight_decay: float = 0.1, power_a: float = 0.01, device: Union[str, torch.device] = "cpu",
               amp: bool = False, prefetch: int = 0, progress: bool = False, schedule: str = "cosine",
               compile: bool = False, mixture: Optional[Sequence[Tuple[int, int, float]]] = None,
               test_settings: Sequence[Tuple[int, int]] = ()) -> MQARResult:
    """Train a fresh model of ``config`` on MQAR at (``seq_len``, ``num_kv_pairs``) and test it.

    Args:
        config: a ``GDN2Config`` (see ``mqar_config``); its ``vocab_size`` is the MQAR vocabulary.
        seq_len, num_kv_pairs: the setting, for training and test (``mqar_batch``'s rules); with
            ``mixture``, for the test only.
        steps: optimizer steps, each on a new batch of ``batch_size`` sequences.
        lr: AdamW's peak learning rate (Zoology sweeps 1e-4 .. 1e-2).
        seed: the initial weights, the training batches and the test set.
        num_test: held-out sequences for the accuracy.
        warmup_steps: default 10% of ``steps``.
        weight_decay: AdamW's, except on biases, norms and the gates' ``A_log`` / ``dt_bias``.
        device: where to train.
        amp: bfloat16 autocast of each training forward (float32 weights; the test runs in float32).
        prefetch: threads generating the next training batches while the device trains (the same
            batches; pays when a GPU step is shorter than generating a batch on the CPU).
        progress: show a progress bar with the loss.
        schedule: the learning rate after the warm-up: ``"cosine"`` to 0 at ``steps`` (Zoology's)
            or ``"constant"`` (so a mixer that leaves MQAR's plateau late still trains at the peak).
        compile: ``torch.compile`` the forward and its backward (see ``mqar_step``).
        mixture: train on Zoology's kind of data instead: every batch drawn from these
            ``(seq_len, num_kv_pairs, weight)`` settings (``mqar_mixture_batch``, e.g.
            ``ZOOLOGY_TRAIN_MIXTURE``), each group of one length run unpadded (``mixture_rows``).
        test_settings: more ``(seq_len, num_kv_pairs)`` to test at, in ``accuracies``.

    Returns:
        An ``MQARResult`` with the test ``accuracy``, ``accuracies`` at every tested setting and every
        step's training ``losses``.
    """
    from ..models import GDN2ForCausalLM
    from ..train.optim import build_scheduler

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    tests = list(dict.fromkeys([(seq_len, num_kv_pairs), *map(tuple, test_settings)]))
    check_settings(config.vocab_size, tests, mixture or (), power_a)   # every setting, before training

    def make(count: int, seed: int) -> MQARData:
        if mixture:
            return mqar_mixture_batch(count, mixture, config.vocab_size, power_a, seed=seed)
        return mqar_batch(count, seq_len, num_kv_pairs, config.vocab_size, power_a, seed=seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = GDN2ForCausalLM(config).to(device).train()
    no_decay = model.no_weight_decay()
    groups = [
        {"params": [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in no_decay],
         "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if p.ndim < 2 or n in no_decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 10 if warmup_steps is None else warmup_steps)
    scheduler = build_scheduler(optimizer, warmup, steps, SCHEDULE_FLOOR[schedule])
    step_losses: List[torch.Tensor] = []
    bar = progress_bar(range(steps), desc=f"MQAR {describe(config)} T={seq_len} P={num_kv_pairs}",
                       enabled=progress, unit="step")
    pin = torch.device(device).type == "cuda"
    # a mixture's groups of one length each run unpadded (same loss: the mean over every answer)
    rows = mixture_rows(batch_size, mixture) if mixture else None
    batches = _training_batches(steps, prefetch, lambda step: _answer_batch(
        make(batch_size, derive_seed(seed, "train", step)), pin, rows))
    shown = hasattr(bar, "set_postfix")
    warm = _answer_batch(make(batch_size, derive_seed(seed, "warm")), rows=rows) if compile else None
    train_step = mqar_step(model, optimizer, device, amp=amp, compile=compile, warm_batch=warm)
    first_step = 0.0
    for step, batch in zip(bar, batches):
        loss = train_step(*(x.to(device, non_blocking=True) for x in batch))
        scheduler.step()
        if step == 0:   # one host wait, for the time compilation and graph capture took
            if pin:
                torch.cuda.synchronize(device)
            first_step = time.perf_counter() - start
        step_losses.append(loss)  # read back once after the loop: no host wait per step
        if shown and step % 50 == 0:       # the bar's loss is the one host wait, every 50 steps
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    losses = torch.stack(step_losses).tolist() if step_losses else []
    accuracies = {(t, pairs): evaluate_mqar(model, t, pairs, num_test, seed, power_a=power_a) for t, pairs in tests}
    accuracy = accuracies[(seq_len, num_kv_pairs)]
    return MQARResult(model=describe(config), seq_len=seq_len, num_kv_pairs=num_kv_pairs, accuracy=accuracy,
                      steps=steps, lr=lr, final_loss=losses[-1] if losses else float("nan"),
                      num_parameters=sum(p.numel() for p in model.parameters()),
                      seconds=round(time.perf_counter() - start, 3), first_step_seconds=round(first_step, 3),
                      losses=losses, accuracies=accuracies)


def mqar_table(results: Sequence[MQARResult], digits: int = 1) -> str:
    """Markdown: one row per model, one column per (seq_len, pairs), accuracy in percent."""
    models = list(dict.fromkeys(r.model for r in results))
    settings = sorted({(r.seq_len, r.num_kv_pairs) for r in results})
    cell = {(r.model, r.seq_len, r.num_kv_pairs): r.accuracy for r in results}
    lines = ["| Model | " + " | ".join(f"T={t}, P={p}" for t, p in settings) + " |",
             "|---|" + "---:|" * len(settings)]
    for model in models:
        values = [cell.get((model, t, p)) for t, p in settings]
        lines.append(f"| {model} | " + " | ".join("" if v is None else f"{100 * v:.{digits}f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def write_mqar(out_dir: Union[str, Path], results: Sequence[MQARResult], meta: Optional[dict] = None) -> List[Path]:
    """``mqar.json`` (rows and loss curves) and ``mqar.md`` (the accuracy table) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": dict(meta or {}), "results": [r.row() for r in results],
               "losses": [{"model": r.model, "seq_len": r.seq_len, "num_kv_pairs": r.num_kv_pairs,
                           "losses": r.losses} for r in results]}
    json_path, md_path = out_dir / "mqar.json", out_dir / "mqar.md"
    json_path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(f"# MQAR accuracy (%)\n\n{mqar_table(results)}", encoding="utf-8")
    return [json_path, md_path]
