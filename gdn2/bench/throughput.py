"""Training throughput at a fixed 16,384 tokens per step: the protocol of the GDN-2 paper's Figure 2.

Every cell is one model (hybrid ``LS``, recurrent ``L`` or transformer ``A``; the L layers with the
gdn2, kda or gdn gates) at one shape B x T with B * T = 16,384, so only the sequence length
changes along a row. A step is what ``gdn2.train.loop`` does per step: forward with labels under
bf16 autocast (float32 master weights), backward, gradient clipping, AdamW step, zero_grad. The
first warm-up step compiles the Triton kernels, so warm-up steps are never timed; the reported
time is the median of the timed steps (CUDA events, so host-side launch overlap counts as it
would in training). Token ids are random: throughput does not depend on their values.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..models import PRESETS, GDN2Config, GDN2ForCausalLM
from ..train.optim import build_optimizer
from .env import software_versions

SHAPES: List[Tuple[int, int]] = [(8, 2048), (4, 4096), (2, 8192), (1, 16384)]
KINDS: Dict[str, str] = {"hybrid": "LS", "recurrent": "L", "transformer": "A"}
MIXERS: Tuple[str, ...] = ("gdn2", "kda", "gdn")
SIZES: Dict[str, Dict] = {
    # the paper's 340M shapes (FLA's 340M recipe); each cell set's kind gives the pattern
    "340m": {k: v for k, v in PRESETS["hybrid_340m"].items() if k != "pattern"},
    # CPU smoke tests only: every code path, none of the cost
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_heads=2, head_k_dim=32, head_v_dim=32,
                 num_attention_heads=2, head_dim=32, intermediate_size=128, vocab_size=256, sliding_window=16),
}
SKIPPED = "skipped (budget)"


def model_config(size: str, kind: str, mixer: Optional[str] = "gdn2", **overrides) -> GDN2Config:
    """The config of one cell set: ``SIZES[size]`` laid out as ``KINDS[kind]`` with ``mixer`` gates."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    # a transformer has no L layer, so its mixer field is never used
    return GDN2Config(**{**SIZES[size], "pattern": KINDS[kind], "mixer": mixer or "gdn2", **overrides})


def count_parameters(config: GDN2Config) -> int:
    """Parameters of the model ``config`` describes, built on the meta device (no memory, ~1 s at 340M).
    Tied embeddings count once, as ``model.parameters()`` yields them once."""
    with torch.device("meta"):
        model = GDN2ForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def cell_sets(kinds: Sequence[str] = tuple(KINDS), mixers: Sequence[str] = MIXERS) -> List[Tuple[str, Optional[str]]]:
    """(kind, mixer) rows of the table; the transformer is one row whatever the mixers."""
    return [(kind, None) if kind == "transformer" else (kind, mixer)
            for kind in kinds for mixer in ([None] if kind == "transformer" else mixers)]


def label(kind: str, mixer: Optional[str]) -> str:
    return kind if mixer is None else f"{kind} {mixer}"


@dataclass
class Cell:
    kind: str
    mixer: Optional[str]
    batch: int
    seq_len: int
    status: str = "pending"   # ok, OOM, error, skipped (budget)
    step_ms: Optional[float] = None
    tokens_per_s: Optional[float] = None
    step_times_ms: List[float] = field(default_factory=list)
    peak_memory_gb: Optional[float] = None
    wall_s: Optional[float] = None   # the whole cell: build, warm-up (compilation), timed steps
    error: Optional[str] = None

    @property
    def label(self) -> str:
        return label(self.kind, self.mixer)


@dataclass
class Report:
    meta: Dict
    parameters: Dict[str, int]   # row label -> count
    cells: List[Cell]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        data = json.loads(text)
        return cls(data["meta"], data["parameters"], [Cell(**c) for c in data["cells"]])


def _train_steps(config: GDN2Config, batch: int, seq_len: int, device: torch.device, steps: int, warmup: int,
                 seed: int, grad_clip: float) -> List[float]:
    """Step times in ms. Every large object lives in this frame, so an OOM frees it all on return."""
    torch.manual_seed(seed)
    with torch.device(device):   # built in place: initialising 400M parameters on the CPU takes longer than timing
        model = GDN2ForCausalLM(config).to(device).train()
    optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    ids = torch.randint(0, config.vocab_size, (batch, seq_len),
                        generator=torch.Generator().manual_seed(seed)).to(device)

    def step() -> torch.Tensor:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(warmup):
        loss = step()
    if cuda:   # compilation and autotuning must not overlap the timed steps
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):   # no synchronisation in between: the host runs ahead, as in training
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step()
            end.record()
            times.append((start, end))
        else:
            start = time.perf_counter()
            loss = step()
            times.append((time.perf_counter() - start) * 1e3)
    if cuda:
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in times]
    if not torch.isfinite(loss).item():
        raise FloatingPointError(f"non-finite loss {loss.item()}")
    return times


def time_training(config: GDN2Config, batch: int, seq_len: int, device="cuda", steps: int = 5, warmup: int = 2,
                  seed: int = 0, grad_clip: float = 1.0, kind: str = "?", mixer: Optional[str] = None) -> Cell:
    """One cell: ``warmup`` then ``steps`` timed training steps of a fresh model on ``batch x seq_len``
    random tokens. Out of memory gives status ``OOM``, any other failure ``error`` (with
    ``cell.error``), instead of raising."""
    device = torch.device(device)
    cell = Cell(kind, mixer, batch, seq_len)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        cell.step_times_ms = _train_steps(config, batch, seq_len, device, steps, warmup, seed, grad_clip)
        cell.status = "ok"
    except torch.cuda.OutOfMemoryError:
        cell.status = "OOM"
    except Exception as e:   # one broken cell (a kernel failing to compile) must not lose the whole run
        cell.status, cell.error = "error", f"{type(e).__name__}: {e}"[:500]
    # past the except clause the traceback, and with it _train_steps' frame, is gone: free its memory
    gc.collect()
    if cuda:
        cell.peak_memory_gb = torch.cuda.max_memory_allocated(device) / 2 ** 30
        torch.cuda.empty_cache()
    cell.wall_s = time.perf_counter() - start
    if cell.status == "ok":
        cell.step_ms = statistics.median(cell.step_times_ms)
        cell.tokens_per_s = batch * seq_len / (cell.step_ms / 1e3)
    return cell


def versions(device: torch.device, size: str) -> Dict:
    now = datetime.datetime.now()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    return {"gpu": gpu, **software_versions(), "date": now.strftime("%Y-%m-%d"), "time": now.strftime("%H%M"),
            "size": size}


def run(size: str = "340m", kinds: Sequence[str] = tuple(KINDS), mixers: Sequence[str] = MIXERS,
        shapes: Sequence[Tuple[int, int]] = SHAPES, device=None, steps: int = 5, warmup: int = 2,
        budget_seconds: Optional[float] = None, backend: str = "auto", seed: int = 0,
        log: Callable[[str], None] = print, progress: bool = True) -> Report:
    """The grid, row by row (a finished row is one line of the plot). Before each cell, if the time
    spent plus the slowest cell so far would pass ``budget_seconds``, that cell and all later ones
    are marked ``skipped (budget)``, so the run ends within one device call."""
    from tqdm.auto import tqdm

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = cell_sets(kinds, mixers)
    configs = {label(k, m): model_config(size, k, m, backend=backend) for k, m in rows}
    report = Report(meta={**versions(device, size), "device": str(device), "steps": steps, "warmup": warmup,
                          "budget_seconds": budget_seconds, "backend": backend, "shapes": [list(s) for s in shapes]},
                    parameters={name: count_parameters(c) for name, c in configs.items()}, cells=[])
    start, slowest, out_of_time = time.perf_counter(), 0.0, False
    bar = tqdm(total=len(rows) * len(shapes), unit="cell", disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else log
    for kind, mixer in rows:
        for B, T in shapes:
            elapsed = time.perf_counter() - start
            out_of_time = out_of_time or (budget_seconds is not None and elapsed + slowest >= budget_seconds)
            if out_of_time:
                cell = Cell(kind, mixer, B, T, status=SKIPPED)
            else:
                cell = time_training(configs[label(kind, mixer)], B, T, device, steps, warmup, seed,
                                     kind=kind, mixer=mixer)
                slowest = max(slowest, cell.wall_s)
            report.cells.append(cell)
            bar.update(1)
            result = (f"{cell.tokens_per_s / 1e3:8.1f}K tok/s, {cell.step_ms:8.1f} ms/step, cell {cell.wall_s:.0f} s"
                      if cell.status == "ok" else cell.status + (f": {cell.error}" if cell.error else ""))
            say(f"{cell.label:>16} {B}x{T}: {result}")
    bar.close()
    report.meta["wall_s"] = time.perf_counter() - start
    return report


def _shape_name(B: int, T: int) -> str:
    return f"{B} x {T // 1024}K" if T % 1024 == 0 else f"{B} x {T}"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def format_markdown(report: Report) -> str:
    m = report.meta
    shapes = [tuple(s) for s in m["shapes"]]
    size = SIZES.get(m["size"], {})
    lines = [f"# Training throughput, {m['date']} {m['time'][:2]}:{m['time'][2:]}, {m['gpu']}", "",
             f"Versions: torch {m['torch']}, triton {m['triton']}, gdn2 {m['gdn2']}, cuda {m['cuda']}, "
             f"python {m['python']}.",
             f"Model size `{m['size']}` (" + ", ".join(f"{k} {v}" for k, v in size.items()) + "). "
             "Tokens per step: " + ", ".join(sorted({f'{B * T:,}' for B, T in shapes})) + ".",
             f"One step = forward with labels (bf16 autocast on CUDA, float32 weights) + backward + clip + AdamW "
             f"+ zero_grad; median of {m['steps']} timed steps after {m['warmup']} warm-up steps; "
             f"backend `{m['backend']}`. Entries: thousands of tokens/s (ms per step).",
             "Parameters (tied embeddings counted once): "
             + ", ".join(f"{k} {_count(v)}" for k, v in report.parameters.items()) + ".",
             f"Wall time {m.get('wall_s', float('nan')):.0f} s, budget "
             + ("none" if m["budget_seconds"] is None else f"{m['budget_seconds']:g} s") + ".", "",
             "| model | " + " | ".join(_shape_name(B, T) for B, T in shapes) + " |",
             "|---" * (len(shapes) + 1) + "|"]
    by_row: Dict[str, Dict[Tuple[int, int], Cell]] = {}
    for c in report.cells:
        by_row.setdefault(c.label, {})[(c.batch, c.seq_len)] = c
    for name, row in by_row.items():
        entries = [row.get(s) for s in shapes]
        count = report.parameters.get(name)
        lines.append(f"| {name}" + (f" ({_count(count)})" if count else "") + " | " + " | ".join(
            "-" if c is None else f"{c.tokens_per_s / 1e3:.1f} ({c.step_ms:.0f} ms)" if c.status == "ok" else c.status
            for c in entries) + " |")
    errors = [f"- {c.label} {c.batch}x{c.seq_len}: {c.error}" for c in report.cells if c.error]
    return "\n".join(lines + (["", "Errors:", ""] + errors if errors else [])) + "\n"


def plot(report: Report, path: Path) -> bool:
    """tokens/s against T, one line per row: solid hybrid, dashed recurrent, black transformer.
    False (and nothing written) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colours = {mixer: f"C{i}" for i, mixer in enumerate(MIXERS)}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for kind, mixer in dict.fromkeys((c.kind, c.mixer) for c in report.cells):
        ok = [c for c in report.cells if (c.kind, c.mixer) == (kind, mixer) and c.status == "ok"]
        if ok:
            style = dict(color="black", linestyle="-") if kind == "transformer" else dict(
                color=colours.get(mixer, None), linestyle="-" if kind == "hybrid" else "--")
            ax.plot([c.seq_len for c in ok], [c.tokens_per_s / 1e3 for c in ok], marker="o",
                    label=label(kind, mixer), **style)
    ax.set_xscale("log", base=2)
    lengths = sorted({T for _, T in report.meta["shapes"]})
    ax.set_xticks(lengths, [f"{T // 1024}K" if T % 1024 == 0 else str(T) for T in lengths])
    tokens = sorted({B * T for B, T in report.meta["shapes"]})
    ax.set_xlabel(f"sequence length T (B x T = {' / '.join(f'{n:,}' for n in tokens)} tokens per step)")
    ax.set_ylabel("training throughput (K tokens/s)")
    ax.set_title(f"{report.meta['size']}, {report.meta['gpu']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def write_results(report: Report, out, log: Callable[[str], None] = print) -> List[Path]:
    """``<out>/<date>-<HHMM>-<gpu>-train-throughput.{md,json,png}``; earlier results are never
    overwritten (a second run in the same minute gets a numbered name)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = report.meta
    gpu = re.sub(r"[^A-Za-z0-9._]+", "-", m["gpu"].replace("NVIDIA ", "")).strip("-")
    stem, n = f"{m['date']}-{m['time']}-{gpu}-train-throughput", 1
    while any((out / f"{stem}{'' if n == 1 else f'-{n}'}{ext}").exists() for ext in (".md", ".json", ".png")):
        n += 1
    stem += "" if n == 1 else f"-{n}"
    paths = [out / f"{stem}.md", out / f"{stem}.json"]
    paths[0].write_text(format_markdown(report))
    paths[1].write_text(report.to_json())
    if plot(report, out / f"{stem}.png"):
        paths.append(out / f"{stem}.png")
    else:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
    return paths
