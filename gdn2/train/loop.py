"""The training loop: ``Trainer(config).run()``.

One optimizer step reads ``grad_accum`` packed micro-batches per process, flattens each to
``[1, B * T]`` with its ``cu_seqlens`` (so the recurrent state and attention restart at every
document), and takes the cross-entropy of the logits against the data's already-shifted labels.
The loss of a step is the mean over every labelled token of the global batch, whatever the
number of processes and micro-batches: each micro-batch's summed loss is divided by the global
token count (times the number of processes, which DDP and FSDP average the gradients over). So a
run over N processes follows the single-process run with the same global batch.

Resuming restores the model, optimizer, scheduler, data position and RNG states, so a run
stopped after a checkpoint and resumed reaches the same parameters as one that never stopped.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import random
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX, PackedDataset, Tokenizer, open_corpus
from ..models import PRESETS as MODEL_PRESETS
from ..models import GDN2Config, GDN2ForCausalLM
from . import checkpoint, distributed, sampling
from .config import TrainConfig
from .metrics import RunLog, plot_losses
from .optim import apply_hyperparameters, build_optimizer, build_scheduler, no_decay_names

LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
TOKENIZER_DIR = "tokenizer"


class Trainer:
    """Builds everything a run needs (process group, tokenizer, model, optimizer, data) from a
    ``TrainConfig``, or from a checkpoint with ``resume``; ``run()`` trains.

    Args:
        config: the run (with ``resume``, normally the checkpoint's config, see ``checkpoint.read_config``).
        resume: a checkpoint directory, or a run directory (its latest checkpoint), to continue from.
        overwrite: start afresh even if the run directory already holds checkpoints (they are deleted).
        verbose: show the progress bar and print evaluations (on the first process only).
    """

    def __init__(self, config: TrainConfig, resume: Optional[Union[str, Path]] = None, overwrite: bool = False,
                 verbose: bool = True):
        self.config, self.verbose = config, verbose
        self.process = distributed.setup(config.device)
        try:
            self._build(resume, overwrite)
        except BaseException:
            distributed.teardown(self.process)
            raise

    # Setting up

    def _build(self, resume, overwrite: bool) -> None:
        c, p = self.config, self.process
        if c.batch_size % (c.grad_accum * p.world_size):
            raise ValueError(f"batch_size = {c.batch_size} rows must split evenly over grad_accum = {c.grad_accum} "
                             f"micro-batches and {p.world_size} process(es)")
        if c.model not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {c.model!r}: choose one of {', '.join(sorted(MODEL_PRESETS))}")
        if "vocab_size" in c.model_overrides:
            raise ValueError("the model's vocab_size comes from the tokenizer: set --vocab-size or --tokenizer instead")
        fields = set(inspect.signature(GDN2Config.__init__).parameters) - {"self", "kwargs"}
        unknown = sorted(set(c.model_overrides) - fields)
        if unknown:   # GDN2Config keeps unknown keywords as attributes: a misspelt field would do nothing
            raise ValueError(f"--model-overrides has unknown field(s) {unknown}; GDN2Config's fields: "
                             f"{', '.join(sorted(fields))}")
        GDN2Config.from_preset(c.model, **c.model_overrides)   # invalid fields fail now, not after the tokenizer
        self.micro_batch = c.batch_size // (c.grad_accum * p.world_size)
        self.run_dir = Path(c.out_dir) / c.name
        self.checkpoint_dir = self.run_dir / checkpoint.CHECKPOINTS
        if p.is_main:
            checkpoint.remove_leftovers(self.checkpoint_dir)
        distributed.barrier(p)
        source = checkpoint.resolve(resume) if resume is not None else None
        if source is None:
            existing = checkpoint.list_checkpoints(self.checkpoint_dir)
            if existing and not overwrite:
                raise FileExistsError(f"{self.run_dir} already holds checkpoints: continue it with --resume "
                                      f"{self.run_dir}, start it again with --overwrite, or choose another --name")
            self._remove(existing)
        else:
            self._check_resume(source, overwrite)

        train_docs = open_corpus(c.corpus, "train", c.heldout_every, c.text_field)
        heldout_docs = open_corpus(c.corpus, "heldout", c.heldout_every, c.text_field)
        if source is not None:
            self.tokenizer = Tokenizer.load(source)
        elif c.tokenizer is not None:
            self.tokenizer = Tokenizer.load(c.tokenizer)
        else:
            self.tokenizer = self._train_tokenizer(train_docs)

        torch.manual_seed(c.seed)   # the same initial weights on every process (FSDP2 shards each one's copy)
        if source is not None:
            with checkpoint.quiet_transformers():
                model = GDN2ForCausalLM.from_pretrained(source).to(torch.float32)
        else:
            tok = self.tokenizer
            model = GDN2ForCausalLM(GDN2Config.from_preset(
                c.model, **{**c.model_overrides, "vocab_size": tok.vocab_size, "eos_token_id": tok.eos_id,
                            "bos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}))
        self.num_parameters = sum(q.numel() for q in model.parameters())
        no_decay = no_decay_names(model)
        model.to(p.device)
        if c.compile:
            for module in model.modules():
                if type(module).__name__ in model._no_split_modules:
                    module.compile()
        self.model = distributed.wrap(model, p, c.parallel)
        self.optimizer = build_optimizer(distributed.unwrap(self.model), c.lr, c.weight_decay, (c.beta1, c.beta2),
                                         no_decay)
        self.scheduler = build_scheduler(self.optimizer, c.warmup_steps, c.steps, c.min_lr / c.lr)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if c.autocast and p.device.type == "cuda"
                         else contextlib.nullcontext())

        self.data = PackedDataset(train_docs, self.tokenizer, c.seq_len, self.micro_batch, seed=c.seed,
                                  rank=p.rank, world_size=p.world_size)
        self.heldout = self._heldout_batches(heldout_docs)

        self.step, self.tokens, self.elapsed, self.initial_eval = 0, 0, 0.0, None
        self.last_eval: Optional[Dict] = None
        if source is not None:
            self._load_state(checkpoint.read_trainer_state(source))
            apply_hyperparameters(self.optimizer, self.scheduler, c.lr, c.weight_decay, (c.beta1, c.beta2))
            if self.step > c.steps:
                raise ValueError(f"{source} is at step {self.step}, past the run's last step {c.steps}: "
                                 f"give --steps {self.step} or more")
        self.log = RunLog(self.run_dir / LOG_FILE, self.run_dir / "tensorboard") if p.is_main else None
        if self.log is not None:
            self.log.truncate_after(self.step if source is not None else -1)
        self.resumed_from = source

    def _check_resume(self, source: Path, overwrite: bool) -> None:
        """A resumed run keeps its checkpoint's model, and writes where no checkpoint but its own
        past lies: checkpoints of a later step in its own folder (a run resumed from an earlier
        one: its log is cut back to that step too), or any in another folder, would be taken for
        the run's latest by the next --resume, or removed by keep-last. With ``overwrite`` they
        are deleted, else refused."""
        c = self.config
        saved = checkpoint.read_config(source)
        for name in ("model", "model_overrides"):
            if saved.get(name) != getattr(c, name):
                raise ValueError(f"a resumed run keeps its checkpoint's {name} ({saved.get(name)!r}), got "
                                 f"{getattr(c, name)!r}: start a new run to change the model")
        own = source.resolve().parent == self.checkpoint_dir.resolve()
        at = checkpoint.step_of(source)
        foreign = [path for path in checkpoint.list_checkpoints(self.checkpoint_dir)
                   if not own or at is None or checkpoint.step_of(path) > at]
        if foreign:
            names = ", ".join(path.name for path in foreign)
            if not overwrite:
                raise FileExistsError(f"{self.checkpoint_dir} holds checkpoints that are not the past of {source} "
                                      f"({names}): delete them with --overwrite, resume the latest, or choose "
                                      f"another --out-dir / --name")
        self._remove(foreign)

    def _remove(self, checkpoints: List[Path]) -> None:
        """Delete ``checkpoints`` (the first process), after every process has listed them and
        before any goes on: the barriers are unconditional, so that a process listing after the
        deletion (and finding nothing) still meets them."""
        p = self.process
        distributed.barrier(p)
        if p.is_main:
            for path in checkpoints:
                shutil.rmtree(path)
        distributed.barrier(p)

    def _train_tokenizer(self, documents) -> Tokenizer:
        """A BPE trained by the first process on the first ``tokenizer_documents`` documents, saved
        in the run directory, from where the other processes load it."""
        c, p = self.config, self.process
        directory = self.run_dir / TOKENIZER_DIR
        if p.is_main:
            tokenizer = Tokenizer.train(itertools.islice(documents, c.tokenizer_documents), c.vocab_size)
            tokenizer.save(directory)
        distributed.barrier(p)
        return tokenizer if p.is_main else Tokenizer.load(directory)

    def _heldout_batches(self, documents) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The first ``eval_tokens`` (in whole rows) of the held-out split, this process's rows of
        them, in chunks of ``micro_batch`` rows: ``(input_ids, labels, cu_seqlens)`` each."""
        c, p = self.config, self.process
        rows = math.ceil(c.eval_tokens / c.seq_len)
        per_process = math.ceil(rows / p.world_size)
        heldout = PackedDataset(documents, self.tokenizer, c.seq_len, per_process, shuffle=False, epochs=1,
                                rank=p.rank, world_size=p.world_size)
        batch = next(heldout, None)
        if batch is None:
            raise ValueError(f"the held-out split of {c.corpus!r} is empty: lower --heldout-every or add documents")
        # the shares round up: rows past the run's own count score nothing, so the held-out loss and
        # its token count are those of one process whatever the number of processes
        beyond = p.rank * per_process + torch.arange(batch["labels"].shape[0]) >= rows
        batch["labels"][beyond] = IGNORE_INDEX
        return split_rows(batch, self.micro_batch)

    # Steps

    def _logits(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        device = self.process.device
        with self.autocast:
            return self.model(input_ids=input_ids.reshape(1, -1).to(device), cu_seqlens=cu_seqlens.to(device)).logits

    @staticmethod
    def _token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy over the labelled tokens (labels are already shifted)."""
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().to(logits.device),
                               ignore_index=IGNORE_INDEX, reduction="sum")

    def train_step(self) -> Dict:
        """One optimizer step over the next global batch; returns its log record."""
        c, p = self.config, self.process
        batches = [next(self.data) for _ in range(c.grad_accum)]
        local = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
        count = float(distributed.all_reduce_sum(torch.tensor(local, dtype=torch.float64, device=p.device), p))
        scale = p.world_size / max(count, 1.0)   # DDP and FSDP average gradients over the processes
        loss_sum = torch.zeros((), dtype=torch.float64, device=p.device)
        for i, batch in enumerate(batches):
            with distributed.gradient_sync(self.model, sync=i == len(batches) - 1):
                loss = self._token_loss(self._logits(batch["input_ids"], batch["cu_seqlens"]), batch["labels"])
                (loss * scale).backward()
            loss_sum += loss.detach()
        max_norm = c.grad_clip if c.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):   # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += c.batch_size * c.seq_len
        loss = float(distributed.all_reduce_sum(loss_sum, p)) / max(count, 1.0)
        return {"kind": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                "tokens": self.tokens}

    @torch.no_grad()
    def evaluate(self) -> Dict:
        """Mean cross-entropy and perplexity on the held-out tokens (all processes together)."""
        self.model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.process.device)
        for input_ids, labels, cu_seqlens in self.heldout:
            totals[0] += self._token_loss(self._logits(input_ids, cu_seqlens), labels)
            totals[1] += int((labels != IGNORE_INDEX).sum())
        self.model.train()
        loss_sum, count = distributed.all_reduce_sum(totals, self.process).tolist()
        loss = loss_sum / max(count, 1.0)
        return {"kind": "eval", "step": self.step, "loss": loss, "ppl": math.exp(min(loss, 700.0)),
                "tokens": int(count)}

    # The run

    def run(self, until: Optional[int] = None) -> Dict:
        """Train to ``config.steps`` (or stop after step ``until``, as an interruption would);
        evaluate every ``eval_every`` steps and save every ``save_every``; at the end save, draw
        the loss curve and sample. Returns a summary: step, time, the first and last evaluation,
        the last checkpoint, the sample."""
        from tqdm.auto import tqdm

        c, p = self.config, self.process
        end = c.steps if until is None else min(until, c.steps)
        say = self._say
        where = f"{p.world_size} processes ({c.parallel})" if p.world_size > 1 else "1 process"
        say(f"{c.name}: {c.model} model, {self.num_parameters / 1e6:.2f}M parameters, vocabulary "
            f"{self.tokenizer.vocab_size}; {c.steps} steps of {c.batch_size} x {c.seq_len} tokens on {where}, "
            f"{p.device.type}" + (f"; resumed from {self.resumed_from}" if self.resumed_from else ""))
        if self.initial_eval is None:
            self.initial_eval = self._record(self.evaluate())
            say(f"step 0: held-out loss {self.initial_eval['loss']:.3f}, perplexity {self.initial_eval['ppl']:.1f} "
                f"({self.initial_eval['tokens']} tokens)")
        saved = None
        bar = tqdm(total=c.steps, initial=self.step, desc=c.name, unit="step", dynamic_ncols=True,
                   disable=not (self.verbose and p.is_main), mininterval=0.5)
        speed, first = None, self.step
        try:
            while self.step < end:
                start = time.perf_counter()
                record = self.train_step()
                seconds = time.perf_counter() - start
                self.elapsed += seconds
                rate = c.batch_size * c.seq_len / seconds
                if self.step > first + 1:   # the first step also tokenizes the corpus
                    speed = rate if speed is None else 0.9 * speed + 0.1 * rate
                self._record({**record, "tokens_per_s": rate, "time": self.elapsed})
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{speed or rate:,.0f}", refresh=False)
                if self.step % c.eval_every == 0 or self.step == c.steps:
                    self.last_eval = self._record(self.evaluate())
                    say(f"step {self.step}: held-out loss {self.last_eval['loss']:.3f}, "
                        f"perplexity {self.last_eval['ppl']:.1f}", bar)
                if self.step % c.save_every == 0 or self.step == c.steps:
                    saved = self.save()
        finally:
            bar.close()
        summary = {"step": self.step, "time": self.elapsed, "tokens": self.tokens, "initial_eval": self.initial_eval,
                   "final_eval": self.last_eval, "checkpoint": saved, "sample": None, "plot": None}
        if self.step == c.steps and p.is_main:
            if plot_losses(self.run_dir / LOG_FILE, self.run_dir / PLOT_FILE, title=f"{c.name}: {c.model} model"):
                summary["plot"] = self.run_dir / PLOT_FILE
            if c.sample_tokens and saved is not None:
                model, tokenizer = sampling.load(saved, p.device)
                summary["sample"] = sampling.generate_text(model, tokenizer, c.sample_prompt, c.sample_tokens,
                                                           seed=c.seed)
        return summary

    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (all processes take part; the first writes it)."""
        model_state, optimizer_state = distributed.full_state_dicts(self.model, self.optimizer)
        state = {"step": self.step, "tokens": self.tokens, "elapsed": self.elapsed,
                 "optimizer": optimizer_state, "scheduler": self.scheduler.state_dict(),
                 "data": self.data.state_dict(), "rng": _rng_state(), "initial_eval": self.initial_eval,
                 "last_eval": self.last_eval, "world_size": self.process.world_size}
        path = None
        if self.process.is_main:
            model = distributed.unwrap(self.model)
            path = checkpoint.save(
                self.checkpoint_dir, self.step,
                lambda d: checkpoint.write_files(d, model, model_state, self.tokenizer, self.config.to_dict(), state),
                self.config.keep_last)
        distributed.barrier(self.process)
        return path

    def _load_state(self, state: Dict) -> None:
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state_dict(state["data"])
        _set_rng_state(state["rng"])
        self.step, self.tokens, self.elapsed = state["step"], state["tokens"], state["elapsed"]
        self.initial_eval, self.last_eval = state["initial_eval"], state["last_eval"]

    def _record(self, record: Dict) -> Dict:
        if self.log is not None:
            self.log.write(record)
        return record

    def _say(self, message: str, bar=None) -> None:
        if self.verbose and self.process.is_main:
            (bar.write if bar is not None else print)(message)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        distributed.teardown(self.process)


def split_rows(batch: Dict[str, torch.Tensor], rows: int) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A packed batch cut into chunks of at most ``rows`` rows, each with its own ``cu_seqlens``
    (every row start is a boundary, so a chunk's offsets are the batch's, shifted)."""
    input_ids, labels, cu_seqlens = batch["input_ids"], batch["labels"], batch["cu_seqlens"].tolist()
    B, T = input_ids.shape
    chunks = []
    for first in range(0, B, rows):
        last = min(B, first + rows)
        cu = torch.tensor([b - first * T for b in cu_seqlens if first * T <= b <= last * T], dtype=torch.int32)
        chunks.append((input_ids[first:last], labels[first:last], cu))
    return chunks


def _rng_state() -> Dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: Dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
