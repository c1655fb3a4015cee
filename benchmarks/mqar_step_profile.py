"""Where an MQAR training step's time goes: host (launches, Python) or device (kernels).

The MQAR sweeps (experiments/mqar.py) train 2-layer d_model-64 models whose steps are a few
milliseconds of kernels; a recurrent cell took 4-5x an attention cell's time on the same card. This
times the step of ``gdn2.eval.mqar_train.train_mqar`` (bf16 autocast forward, backward, gradient
clipping, AdamW: ``mqar_step``) per mixer, alone on the device, and splits it with ``torch.profiler``:

    python benchmarks/mqar_step_profile.py --mixers gdn2,deltanet,attention --out OUT

Per mixer: the step's wall time (synchronised, median), the summed device time of its kernels,
the kernel launches a step, and the costliest kernels. Wall time well above the device time means
the step is host-bound (fewer launches, CUDA graphs help); close to it, the kernels themselves.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from gdn2.bench.profile import kernel_table
from gdn2.eval.mqar import mqar_batch
from gdn2.eval.mqar_train import _answer_batch, mqar_config, mqar_mixers, mqar_step


def build(mixer, d_model, vocab_size, device, fused_adam):
    from gdn2.models import GDN2ForCausalLM
    torch.manual_seed(0)
    model = GDN2ForCausalLM(mqar_config(mixer, vocab_size=vocab_size, hidden_size=d_model)).to(device).train()
    kwargs = {"fused": True} if fused_adam else {}
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), **kwargs)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def profile_mixer(mixer, args, device):
    model, optimizer = build(mixer, args.d_model, args.vocab_size, device, args.fused_adam)
    batch = tuple(x.to(device) for x in _answer_batch(
        mqar_batch(args.batch_size, args.seq_len, args.pairs, args.vocab_size, seed=1)))
    step = mqar_step(model, optimizer, device, amp=device.type == "cuda", compile=args.compile, warm_batch=batch)
    start = time.perf_counter()
    for _ in range(args.warmup):                     # compiles every kernel the step launches
        step(*batch)
    sync(device)
    warmup_s = time.perf_counter() - start
    walls = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step(*batch)
        sync(device)
        walls.append(1e3 * (time.perf_counter() - t))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.profiled_steps):
            step(*batch)
        sync(device)
    device_ms, launches, top = kernel_table(prof, args.profiled_steps, args.top)
    return {"mixer": mixer, "wall_ms": statistics.median(walls), "device_ms": device_ms, "launches": launches,
            "warmup_s": warmup_s, "top": top}


def report(rows, args, device):
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    lines = [f"# MQAR step profile, {time.strftime('%Y-%m-%d', time.gmtime())}, {name}", "",
             f"torch {torch.__version__}; T = {args.seq_len}, {args.pairs} pairs, batch {args.batch_size}, "
             f"d_model {args.d_model}, vocabulary {args.vocab_size}, 2 layers; medians of {args.steps} steps "
             f"after {args.warmup}; device time and launches from {args.profiled_steps} profiled steps; "
             f"AdamW {'fused' if args.fused_adam else 'foreach'}; "
             f"{'compiled (CUDA graphs on CUDA)' if args.compile else 'eager'}.", "",
             "| mixer | step wall (ms) | kernels' device time (ms) | device share | launches a step | warm-up (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        share = r["device_ms"] / r["wall_ms"] if r["wall_ms"] else 0.0
        lines.append(f"| {r['mixer']} | {r['wall_ms']:.2f} | {r['device_ms']:.2f} | {share:.0%} | {r['launches']:.0f} "
                     f"| {r['warmup_s']:.1f} |")
    for r in rows:
        lines += ["", f"## {r['mixer']}: costliest kernels a step", "", "| kernel | launches | ms |", "|---|---:|---:|"]
        lines += [f"| `{k[:90]}` | {c:.0f} | {ms:.3f} |" for k, c, ms in r["top"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mixers", default="gdn2,deltanet,attention",
                   type=lambda s: [m for m in s.split(",") if m], help=f"from {', '.join(mqar_mixers())}")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profiled-steps", type=int, default=5)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--fused-adam", action="store_true", help="AdamW(fused=True) (CUDA) instead of foreach")
    p.add_argument("--compile", action="store_true", help="compile the loss as train_mqar(compile=True) does")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="also write mqar-step-profile.md here")
    args = p.parse_args(argv)
    bad = [m for m in args.mixers if m not in mqar_mixers()]
    if bad:
        p.error(f"unknown mixers {bad}; choose from {', '.join(mqar_mixers())}")
    device = torch.device(args.device)
    text = report([profile_mixer(m, args, device) for m in args.mixers], args, device)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "mqar-step-profile" + ("-compiled" if args.compile else "") + ("-fused-adam" if args.fused_adam else "")
        (args.out / f"{name}.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
