"""Inference-state memory vs context length (spec section 10), from a model configuration.

Per sequence and layer, with ``a`` bytes per activation (the model's dtype):

    A (full attention)      2 * tokens * kv_heads * head_dim * a                grows with the context
    S (sliding window W)    2 * min(tokens, W) * kv_heads * head_dim * a        capped at W tokens
    L (GDN-2)               HV * K * V * 4  +  (conv_size - 1) * (2 H K + HV V) * a    constant

These are exactly the tensors ``GDN2Cache`` holds (the recurrent state is float32, float64 for a
float64 model); a test checks the formula against a real model's cache.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import torch

CONTEXTS = [2 ** i for i in range(10, 21)]   # 1K ... 1M tokens

# name -> pattern; the four layouts compared at the same depth and width
VARIANTS: Dict[str, str] = {
    "full attention": "A",
    "recurrent (L)": "L",
    "3:1 hybrid (LLLA)": "LLLA",
    "SWA hybrid (LS)": "LS",
}


def _layer_kinds(config, pattern: Optional[str]) -> List[str]:
    pattern = config.pattern if pattern is None else pattern
    return [pattern[i % len(pattern)] for i in range(config.num_hidden_layers)]


def layer_state_bytes(config, kind: str, context_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of one layer's inference state for one sequence of ``context_len`` tokens."""
    a = torch.empty((), dtype=dtype).element_size()
    if kind == "L":
        state = 8 if dtype == torch.float64 else 4
        H, HV, K, V = config.num_heads, config.num_v_heads, config.head_k_dim, config.head_v_dim
        if K is None or V is None:   # a config without L layers whose heads do not divide hidden_size
            raise ValueError(f"head_k_dim and head_v_dim must be set to size L layers for this config (num_heads = "
                             f"{config.num_heads} does not divide hidden_size = {config.hidden_size})")
        return HV * K * V * state + (config.conv_size - 1) * (2 * H * K + HV * V) * a
    if kind not in ("A", "S"):
        raise ValueError(f"layer kind must be L, A or S, got {kind!r}")
    if config.head_dim is None:   # a config without attention layers whose heads do not divide hidden_size
        raise ValueError(f"head_dim must be set to size {kind} layers for this config (num_attention_heads = "
                         f"{config.num_attention_heads} does not divide hidden_size = {config.hidden_size})")
    tokens = context_len if kind == "A" else min(context_len, config.sliding_window)
    return 2 * tokens * config.num_key_value_heads * config.head_dim * a


def inference_state_bytes(config, context_len: int, batch_size: int = 1, dtype: torch.dtype = torch.bfloat16,
                          pattern: Optional[str] = None) -> int:
    """Bytes of every layer's cache after ``context_len`` tokens of ``batch_size`` sequences, for a
    ``GDN2Config`` (or any object with its fields) run in ``dtype``; ``pattern`` overrides the
    config's layer pattern (e.g. ``"A"`` for the same-size Transformer)."""
    if context_len < 0 or batch_size < 1:
        raise ValueError(f"context_len must be >= 0 and batch_size >= 1, got {context_len} and {batch_size}")
    return batch_size * sum(layer_state_bytes(config, kind, context_len, dtype)
                            for kind in _layer_kinds(config, pattern))


def memory_table(config, contexts: Sequence[int] = CONTEXTS, variants: Dict[str, str] = VARIANTS,
                 batch_size: int = 1, dtype: torch.dtype = torch.bfloat16) -> Dict[str, List[int]]:
    """``{variant: [bytes at each context]}`` for every layout in ``variants`` (name -> pattern)."""
    return {name: [inference_state_bytes(config, n, batch_size, dtype, pattern) for n in contexts]
            for name, pattern in variants.items()}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_tokens(n: int) -> str:
    return f"{n // 2 ** 20}M" if n >= 2 ** 20 else f"{n // 2 ** 10}K" if n >= 2 ** 10 else str(n)


def format_table(contexts: Sequence[int], table: Dict[str, List[int]]) -> str:
    """A fixed-width text table: one row per context length, one column per variant."""
    names = list(table)
    widths = [max(len(name), 11) for name in names]
    lines = ["context  " + "  ".join(name.rjust(w) for name, w in zip(names, widths))]
    for i, n in enumerate(contexts):
        lines.append(f"{human_tokens(n):>7}  " + "  ".join(human_bytes(table[name][i]).rjust(w)
                                                          for name, w in zip(names, widths)))
    return "\n".join(lines)


def plot(contexts: Sequence[int], table: Dict[str, List[int]], path: str, title: str = "") -> None:
    """Log-log plot of state bytes vs context length, one line per variant (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in table.items():
        ax.plot(contexts, [v / 2 ** 30 for v in values], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(contexts), [human_tokens(n) for n in contexts])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("inference state (GiB)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``gdn2 memory``: print the table (and draw the plot) for a preset."""
    import argparse

    parser = argparse.ArgumentParser(prog="gdn2 memory", description=(
        "Inference-state bytes vs context length (1K..1M tokens) for the same-size full-attention "
        "Transformer, all-recurrent GDN-2, the 3:1 hybrid (LLLA) and the sliding-window hybrid (LS)."))
    parser.add_argument("--preset", default="paper_1.3b", help="GDN2Config preset giving the shapes (default paper_1.3b)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32", "float64"],
                        help="activation / KV dtype (the recurrent state is float32 regardless)")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded at once (default 1)")
    parser.add_argument("--window", type=int, default=None, help="sliding window of S layers (default: the preset's)")
    parser.add_argument("--plot", default="gdn2-memory.png", help="PNG path (needs matplotlib; default gdn2-memory.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        from .models import GDN2Config
    except ImportError as err:
        parser.error(f"needs transformers for the model presets (pip install 'gdn2[hf]'): {err}")
    overrides = {} if args.window is None else {"sliding_window": args.window}
    config = GDN2Config.from_preset(args.preset, **overrides)
    dtype = getattr(torch, args.dtype)
    table = memory_table(config, CONTEXTS, VARIANTS, args.batch, dtype)
    print(f"inference state of {args.preset} ({config.num_hidden_layers} layers, d_model {config.hidden_size}), "
          f"batch {args.batch}, {args.dtype} KV, float32 recurrent state, window {config.sliding_window}")
    print(format_table(CONTEXTS, table))
    if not args.no_plot:
        try:
            plot(CONTEXTS, table, args.plot, title=f"{args.preset}: inference state vs context")
        except ImportError:
            print("(no plot: pip install 'gdn2[plot]' for matplotlib)")
        else:
            print(f"plot: {args.plot}")
    return 0
