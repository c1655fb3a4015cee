"""``gdn2 train`` and ``gdn2 generate``: argument parsing, errors as messages, the summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from .config import PRESETS, TrainConfig

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_DEFAULTS = TrainConfig()


def _parse_assignment(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)   # numbers, true/false, null; anything else stays a string
    except json.JSONDecodeError:
        return key, value


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdn2 train",
        description="Train a GDN2ForCausalLM. With no arguments: the tiny model on the built-in King James "
                    "corpus, a few minutes on a CPU. Every flag overrides the preset (or, with --resume, the "
                    "checkpoint's config). Several processes: torchrun --nproc_per_node N -m gdn2.cli train ...")
    parser.add_argument("--preset", default=None, help=f"named configuration: {', '.join(PRESETS)} (default tiny)")
    parser.add_argument("--resume", metavar="DIR", default=None,
                        help="continue a checkpoint (or a run directory's latest) exactly, with its config")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again even if the run directory already holds checkpoints (deletes them)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or evaluation messages")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: PyTorch's choice, one per core; torchrun sets 1)")
    for name, f in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(_DEFAULTS, name)
        kwargs = dict(dest=name, default=argparse.SUPPRESS, help=f"{f.metadata['help']} (tiny: {default!r})")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(default, dict):
            parser.add_argument(flag, nargs="+", type=_parse_assignment, metavar=f.metadata["metavar"], **kwargs)
        else:
            parser.add_argument(flag, type=str if default is None else type(default),
                                choices=f.metadata.get("choices"), **kwargs)
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The preset (or the resumed checkpoint's config) with the flags given on the command line."""
    from . import checkpoint

    given: Dict[str, Any] = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    if args.resume is not None:
        if args.preset is not None:
            raise ValueError("--preset and --resume exclude each other: a resumed run keeps its checkpoint's config "
                             "(override single fields with their flags)")
        source = checkpoint.resolve(args.resume)
        base = TrainConfig.from_dict(checkpoint.read_config(source))
        if source.parent.name == checkpoint.CHECKPOINTS:
            # the run goes on in its own folder wherever the command runs (its config's out_dir may
            # be relative to another working directory); --out-dir or --name moves it elsewhere
            run_dir = source.resolve().parent.parent
            base = base.replace(out_dir=str(run_dir.parent), name=run_dir.name)
    else:
        base = TrainConfig.from_preset(args.preset or "tiny")
    if "model_overrides" in given:
        given["model_overrides"] = {**base.model_overrides, **dict(given["model_overrides"])}
    return base.replace(**given)


def _check_paths(config: TrainConfig) -> None:
    if config.corpus != "kjv" and not config.corpus.startswith("hf:") and not Path(config.corpus).exists():
        raise FileNotFoundError(f"corpus {config.corpus!r} is neither 'kjv', 'hf:DATASET[:CONFIG]' nor an existing "
                                f"file or directory")
    if config.tokenizer is not None and not Path(config.tokenizer).exists():
        raise FileNotFoundError(f"no tokenizer at {config.tokenizer}")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def train_main(argv: Optional[Iterable[str]] = None) -> int:
    parser = train_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    try:
        config = resolve_config(args)
        _check_paths(config)
        from .loop import Trainer

        trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite, verbose=not args.quiet)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, KeyError) as err:
        parser.error(str(err).strip('"'))
    try:
        summary = trainer.run()
    except KeyboardInterrupt:
        if trainer.process.is_main:
            print(f"\ninterrupted at step {trainer.step}; continue from the last checkpoint with "
                  f"--resume {trainer.run_dir}", file=sys.stderr)
        return 130
    finally:
        trainer.close()
    if trainer.process.is_main:
        first, last = summary["initial_eval"], summary["final_eval"]
        print(f"\nheld-out perplexity {first['ppl']:.1f} before -> {last['ppl']:.1f} after training "
              f"(loss {first['loss']:.3f} -> {last['loss']:.3f} nats/token; {summary['step']} steps, "
              f"{summary['tokens']:,} tokens, {_duration(summary['time'])} of training)")
        if summary["checkpoint"] is not None:
            print(f"checkpoint: {summary['checkpoint']}")
        if summary["plot"] is not None:
            print(f"loss curve: {summary['plot']}")
        if summary["sample"] is not None:
            print(f"sample: {summary['sample']!r}")
            print(f"more:   gdn2 generate --checkpoint {trainer.run_dir} --prompt {config.sample_prompt!r}")
    return 0


def generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdn2 generate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Continue a prompt with a model trained by gdn2 train.")
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="a checkpoint directory, or a run directory (its latest checkpoint)")
    parser.add_argument("--prompt", default="", help="the start of the text (read as the start of a document)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate at most")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0: greedy)")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0,
                        help="sample among the most likely tokens whose probability reaches p (1: all)")
    parser.add_argument("--num-samples", type=int, default=1, help="independent samples to print")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sample (the next ones count up)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parser


def generate_main(argv: Optional[Iterable[str]] = None) -> int:
    parser = generate_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.max_new_tokens < 1 or args.temperature < 0 or args.top_k < 0 or not 0 < args.top_p <= 1 \
            or args.num_samples < 1:
        parser.error("need --max-new-tokens >= 1, --temperature >= 0, --top-k >= 0, 0 < --top-p <= 1 and "
                     "--num-samples >= 1")
    try:
        from .sampling import generate_text, load

        model, tokenizer = load(args.checkpoint, args.device)
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        parser.error(str(err))
    for i in range(args.num_samples):
        if i:
            print("\n---")
        print(generate_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature,
                            args.top_k or None, args.top_p if args.top_p < 1 else None, seed=args.seed + i))
    return 0
