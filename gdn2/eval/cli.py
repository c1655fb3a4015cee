"""``gdn2 eval``: RULER, MQAR, perplexity and lm-eval from the command line.

    gdn2 eval ruler   --checkpoint DIR [--tasks S-NIAH-1 ...] [--lengths 1K 2K 4K] [--samples 20] [--out DIR]
    gdn2 eval mqar    [--mixers gdn2 kda gdn deltanet gla attention] [--seq-lens 64] [--kv-pairs 4] [--zoology]
                      [--steps 300] [--out DIR]
    gdn2 eval ppl     --checkpoint DIR [--corpus kjv] [--split heldout] [--out DIR]
    gdn2 eval lm-eval --checkpoint DIR --tasks piqa hellaswag ... [--limit N] [--out DIR]

Each prints a markdown table and writes JSON and markdown files (default: ``DIR/eval`` for a
checkpoint, ``mqar-results`` for MQAR). ``add_eval_parser`` registers the command on the
``gdn2`` parser and ``run_eval`` runs it; heavy modules load only when a command runs.
Errors in the arguments (a missing checkpoint, an unknown task) print one line and return 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

DEVICE_HELP = "torch device to run on, e.g. cpu or cuda (default: cuda if available, else cpu)"


def _length(text: str) -> int:
    """``4096``, ``4K`` or ``4k`` (x 1024) as an int."""
    match = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a length: {text!r} (use e.g. 4096 or 4K)")
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _checkpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="checkpoint directory: a GDN2ForCausalLM saved with save_pretrained and its "
                             "tokenizer (tokenizer.json)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="cast the weights (default: as saved)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write results (default: CHECKPOINT/eval)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` and its subcommands on ``subparsers`` (from ``add_subparsers``); returns
    the ``eval`` parser. Run the parsed arguments with ``run_eval(args)``."""
    from .ruler import TASKS

    parser = subparsers.add_parser("eval", help="evaluate: RULER needles, MQAR recall, perplexity, lm-eval tasks",
                                   description="Evaluate models (gdn2 eval COMMAND --help for options).")
    sub = parser.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")

    ruler = sub.add_parser("ruler", help="RULER needle-in-a-haystack retrieval accuracy of a checkpoint",
                           description="Generate RULER NIAH samples with the checkpoint's tokenizer, decode "
                                       "greedily with the constant-memory cache, score by string match.")
    _checkpoint_args(ruler)
    ruler.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK",
                       help=f"tasks, paper or RULER names (default: all: {' '.join(TASKS)})")
    ruler.add_argument("--lengths", nargs="+", type=_length, default=[1024, 2048, 4096], metavar="N",
                       help="context lengths in tokens, e.g. 1K 2K 4K 8K (default: 1K 2K 4K)")
    ruler.add_argument("--samples", type=_positive, default=20, metavar="N",
                       help="samples per task and length, needle depths spread evenly (default: 20)")
    ruler.add_argument("--seed", type=int, default=42, help="seed of the samples (default: 42)")

    mqar = sub.add_parser("mqar", help="train small models on MQAR and report recall accuracy",
                          description="For every mixer and (sequence length, pairs) setting, train a fresh "
                                      "2-layer model on freshly generated MQAR batches (AdamW, cosine schedule) "
                                      "and measure its accuracy on a held-out set.")
    mqar.add_argument("--mixers", nargs="+", default=["gdn2", "kda", "gdn", "deltanet", "gla", "attention"],
                      metavar="MIXER", help="linear mixer presets (gdn2, gdn2_b_only, gdn2_w_only, kda, gdn, deltanet, "
                                            "gla, ...), 'attention' or 'attention_conv' (with a short convolution) "
                                            "(default: gdn2 kda gdn deltanet gla attention)")
    mqar.add_argument("--pattern", default=None,
                      help="layer pattern for the linear mixers, e.g. LA for a hybrid (default: L)")
    mqar.add_argument("--seq-lens", nargs="+", type=_positive, default=[64], metavar="T",
                      help="sequence lengths, even (default: 64)")
    mqar.add_argument("--kv-pairs", nargs="+", type=_positive, default=[4], metavar="P",
                      help="key-value pairs per sequence, at most T / 4 (default: 4)")
    mqar.add_argument("--steps", type=_positive, default=300,
                      help="training steps per run (default: 300, a CPU smoke test; recall needs ~10^4)")
    mqar.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default: 3e-3)")
    mqar.add_argument("--batch-size", type=_positive, default=32, help="sequences per step (default: 32)")
    mqar.add_argument("--vocab-size", type=_positive, default=8192,
                      help="MQAR vocabulary, above every sequence length (default: Zoology's 8192; a smaller one "
                           "learns in fewer steps)")
    mqar.add_argument("--hidden-size", type=_positive, default=64, help="model width (default: 64)")
    mqar.add_argument("--layers", type=_positive, default=2, help="blocks (default: 2)")
    mqar.add_argument("--heads", type=_positive, default=2, help="heads per layer (default: 2)")
    mqar.add_argument("--test-size", type=_positive, default=256, help="held-out sequences (default: 256)")
    mqar.add_argument("--seed", type=int, default=0, help="seed of weights, training and test data (default: 0)")
    mqar.add_argument("--device", default=None, help=DEVICE_HELP)
    mqar.add_argument("--out", default="mqar-results", metavar="DIR",
                      help="where to write mqar.json and mqar.md (default: mqar-results)")
    mqar.add_argument("--zoology", action="store_true",
                      help="train each mixer once on Zoology's mixture of settings (T 64 to 256, each length "
                           "unpadded; --vocab-size above 256) and test it at every --seq-lens x --kv-pairs")
    mqar.add_argument("--no-progress", action="store_true", help="no progress bar")

    ppl = sub.add_parser("ppl", help="perplexity per token and per byte of a checkpoint on held-out text",
                         description="Score every document as <|endoftext|> doc; report exp(NLL / tokens), "
                                     "exp(NLL / UTF-8 bytes) and bits per byte.")
    _checkpoint_args(ppl)
    ppl.add_argument("--corpus", default="kjv",
                     help="kjv (built in), a .txt/.jsonl/.parquet file or directory, or hf:DATASET[:CONFIG] "
                          "(default: kjv)")
    ppl.add_argument("--split", default="heldout", choices=["heldout", "train", "all"],
                     help="every Nth document is held out, N from --heldout-every (default: heldout)")
    ppl.add_argument("--heldout-every", type=_positive, default=None, metavar="N",
                     help="hold out every Nth document (default: the checkpoint's training run's, so the held-out "
                          "split is the one it did not train on; 20 without one)")
    ppl.add_argument("--field", default="text", help="JSON field / Parquet column of the text (default: text)")
    ppl.add_argument("--max-documents", type=_positive, default=None, metavar="N", help="score only the first N")
    ppl.add_argument("--batch-tokens", type=_positive, default=8192, metavar="N",
                     help="tokens per forward; documents are packed up to it (default: 8192)")

    lm = sub.add_parser("lm-eval", help="lm-evaluation-harness tasks on a checkpoint (pip install lm-eval)",
                        description="Run lm-eval tasks, e.g. wikitext lambada_openai piqa hellaswag winogrande "
                                    "arc_easy arc_challenge openbookqa social_iqa boolq (the data comes from "
                                    "the Hugging Face Hub unless --include-path tasks read local files).")
    _checkpoint_args(lm)
    lm.add_argument("--tasks", nargs="+", required=True, metavar="TASK", help="lm-eval task names")
    lm.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's)")
    lm.add_argument("--limit", type=float, default=None,
                    help="examples per task (a fraction below 1): for quick checks only")
    lm.add_argument("--include-path", default=None, metavar="DIR", help="extra task YAML directory")
    lm.add_argument("--no-default-tasks", action="store_true",
                    help="index only the --include-path tasks, not lm-eval's own (faster; for local tasks)")
    lm.add_argument("--batch-tokens", type=_positive, default=8192, metavar="N", help="tokens per forward")
    lm.add_argument("--max-length", type=_positive, default=None,
                    help="truncate contexts to this many tokens (default: none, full context)")
    return parser


class UsageError(Exception):
    """A problem with the arguments: reported in one line, exit status 2."""


def run_eval(args: argparse.Namespace) -> int:
    """Run the ``eval`` subcommand parsed by ``add_eval_parser``; returns the exit status."""
    commands = {"ruler": _ruler, "mqar": _mqar, "ppl": _ppl, "lm-eval": _lm_eval}
    try:
        return commands[args.eval_command](args) or 0
    except UsageError as e:
        print(f"gdn2 eval {args.eval_command}: error: {e}", file=sys.stderr)
        return 2


def _device(name: Optional[str]) -> str:
    import torch

    from ..ops.utils import usable_device
    try:
        return str(usable_device(name or ("cuda" if torch.cuda.is_available() else "cpu")))
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None


def _check_checkpoint(args) -> None:
    from .checkpoint import CheckpointError, check_checkpoint
    try:
        check_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise UsageError(str(e)) from None


def _load(args):
    from .checkpoint import load_checkpoint
    _check_checkpoint(args)
    import torch
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return load_checkpoint(args.checkpoint, device=_device(args.device), dtype=dtype)


def _out_dir(args) -> Path:
    return Path(args.out) if args.out else Path(args.checkpoint) / "eval"


def _written(*paths) -> None:
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)


def _ruler(args) -> int:
    from .ruler import get_task
    try:
        tasks = [get_task(t).name for t in args.tasks]
    except ValueError as e:
        raise UsageError(str(e)) from None
    model, tokenizer = _load(args)
    from .harness import run_ruler
    from .ruler import LengthTooShort
    try:
        result = run_ruler(model, tokenizer, tasks, args.lengths, args.samples, args.seed,
                           progress=not args.no_progress, meta={"checkpoint": str(args.checkpoint)})
    except LengthTooShort as e:
        raise UsageError(f"--lengths: {e}") from None
    paths = result.write(_out_dir(args))
    print(result.table, end="")
    _written(*paths)
    return 0


def _mqar(args) -> int:
    from dataclasses import replace

    from .mqar import ZOOLOGY_TRAIN_MIXTURE
    from .mqar_train import ATTENTIONS, check_settings, mqar_config, mqar_mixers, mqar_table, train_mqar, write_mqar
    unknown = [m for m in args.mixers if m not in mqar_mixers()]
    if unknown:
        raise UsageError(f"unknown mixer(s) {', '.join(unknown)}; choose from {', '.join(mqar_mixers())}")
    settings = [(t, p) for t in args.seq_lens for p in args.kv_pairs]
    try:
        check_settings(args.vocab_size, settings, ZOOLOGY_TRAIN_MIXTURE if args.zoology else ())
    except ValueError as e:
        raise UsageError(f"invalid MQAR setting: {e} (T must be even and at least 4 * P; --vocab-size must "
                         f"exceed every T, with --zoology its training lengths too)") from None
    results = []
    for mixer in args.mixers:
        try:
            config = mqar_config(mixer, None if mixer in ATTENTIONS else args.pattern, vocab_size=args.vocab_size,
                                 hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads)
        except ValueError as e:
            raise UsageError(str(e)) from None
        # one model per setting, or one per mixer tested at every setting
        for train in [[s] for s in settings] if not args.zoology else [settings]:
            result = train_mqar(config, *train[0], args.steps, args.lr, args.seed, batch_size=args.batch_size,
                                num_test=args.test_size, device=_device(args.device), progress=not args.no_progress,
                                mixture=ZOOLOGY_TRAIN_MIXTURE if args.zoology else None, test_settings=train[1:])
            for (seq_len, pairs), accuracy in result.accuracies.items():
                print(f"{result.model} T={seq_len} P={pairs}: accuracy {100 * accuracy:.1f}% "
                      f"(loss {result.final_loss:.3f}, {result.seconds:.0f} s)", file=sys.stderr)
                results.append(replace(result, seq_len=seq_len, num_kv_pairs=pairs, accuracy=accuracy))
    meta = {k: v for k, v in vars(args).items() if k not in ("eval_command", "command", "no_progress", "out")}
    paths = write_mqar(args.out, results, meta)
    print(mqar_table(results), end="")
    _written(*paths)
    return 0


def _trained_heldout_every(checkpoint) -> Optional[int]:
    """The ``heldout_every`` of the run that wrote ``checkpoint`` (a checkpoint or a run directory,
    its latest one; None for one without its training config)."""
    from ..train.checkpoint import TRAIN_CONFIG, read_config
    from .checkpoint import CheckpointError, check_checkpoint
    try:
        path = check_checkpoint(checkpoint)
    except CheckpointError:
        return None
    return read_config(path).get("heldout_every") if (path / TRAIN_CONFIG).is_file() else None


def _ppl(args) -> int:
    from ..data import open_corpus
    every = args.heldout_every or _trained_heldout_every(args.checkpoint) or 20
    try:
        documents = open_corpus(args.corpus, split=args.split, heldout_every=every, field=args.field)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    model, tokenizer = _load(args)
    from .ppl import perplexity
    result = perplexity(model, tokenizer, documents, max_documents=args.max_documents,
                        batch_tokens=args.batch_tokens, progress=not args.no_progress)
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    name = f"ppl-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(args.corpus).name)}-{args.split}"
    table = result.table(f"{args.corpus} ({args.split})")
    result.write(out / f"{name}.json", meta={"checkpoint": str(args.checkpoint), "corpus": args.corpus,
                                             "split": args.split, "heldout_every": every,
                                             "max_documents": args.max_documents})
    (out / f"{name}.md").write_text(f"# Perplexity\n\ncheckpoint: {args.checkpoint}\n\n{table}", encoding="utf-8")
    print(table, end="")
    _written(out / f"{name}.json", out / f"{name}.md")
    return 0


def _lm_eval(args) -> int:
    try:
        import lm_eval
        from .lm_eval_adapter import GDN2LM
    except ImportError as e:
        raise UsageError(f"{e} (pip install lm-eval)") from None
    if args.no_default_tasks and not args.include_path:
        raise UsageError("--no-default-tasks needs --include-path")
    _check_checkpoint(args)
    from lm_eval.tasks import TaskManager
    manager = TaskManager(include_path=args.include_path, include_defaults=not args.no_default_tasks)
    unknown = [t for t in args.tasks if t not in manager.all_tasks]
    if unknown:
        raise UsageError(f"unknown lm-eval task(s) {', '.join(unknown)} (lm-eval's list: lm-eval ls tasks)")
    model, tokenizer = _load(args)
    lm = GDN2LM(model=model, tokenizer=tokenizer, batch_tokens=args.batch_tokens, max_length=args.max_length)
    results = lm_eval.simple_evaluate(model=lm, tasks=args.tasks, num_fewshot=args.num_fewshot, limit=args.limit,
                                      task_manager=manager, log_samples=False)
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lm_eval.json"
    keep = {k: results[k] for k in ("results", "versions", "n-shot", "configs") if k in results}
    path.write_text(json.dumps(keep, indent=1, default=str) + "\n", encoding="utf-8")
    print(lm_eval.utils.make_table(results))
    _written(path)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m gdn2.eval.cli eval ...``: the ``eval`` command on its own."""
    parser = argparse.ArgumentParser(prog="gdn2")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
