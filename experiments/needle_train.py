"""Training of one needle cell (``experiments/needle.py``): the loss of a batch of needle and corpus
rows, and the optimisation loop, eager or compiled."""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from experiments.needle_data import IGNORE_INDEX, NeedleData
from gdn2.eval.mqar_train import compile_step, derive_seed


def unpacked(args) -> bool:
    """Whether ``args``' batches go in as ``[B, T]`` without offsets (needle rows only, or corpus
    rows whose state flows through document starts): the batches ``--compile`` can compile."""
    return round(args.batch_size * args.needle_fraction) == args.batch_size or bool(args.no_document_resets)


def row_losses(model, amp: bool, device_type: str) -> Callable[..., Tuple[torch.Tensor, torch.Tensor]]:
    """``losses(ids, labels, is_needle, cu_seqlens)``: the training loss (the mean over rows of each
    row's mean token cross-entropy) and, detached, ``[total, corpus rows, needle rows]`` for the
    curves (a part without rows gives 0 / 0 = nan, dropped there; no host sync)."""
    def losses(ids, labels, is_needle, cu_seqlens=None):
        # autocast entered per step: its cache of bf16 weight copies lives as long as the context
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=ids, cu_seqlens=cu_seqlens).logits
        B, T = labels.shape
        ce = F.cross_entropy(logits.reshape(B * T, -1).float(), labels.view(-1), ignore_index=IGNORE_INDEX,
                             reduction="none").view(B, T)
        count = (labels != IGNORE_INDEX).sum(1)
        valid = count > 0
        row = ce.sum(1) / count.clamp_min(1)
        loss = (row * valid).sum() / valid.sum().clamp_min(1)
        with torch.no_grad():
            corpus, needle = valid & ~is_needle, valid & is_needle
            parts = torch.stack([loss, (row * corpus).sum() / corpus.sum(), (row * needle).sum() / needle.sum()])
        return loss, parts
    return losses


def train_cell(model, data: NeedleData, args, cell, device: torch.device, amp: bool,
               on_step: Optional[Callable[[], None]] = None) -> Tuple[Dict[str, List[float]], bool]:
    """Train ``model`` in place for ``cell`` (a ``needle.Cell``: its seed picks the data); returns the
    per-step total, corpus-row and needle-row losses and whether the steps ran compiled.
    ``on_step``: called after every optimizer step (a profiler's ``step``).

    Batches of needle rows only (``--needle-fraction 1``) go in as ``[B, T]``: a row's padding comes
    after its example, and no causal layer lets it reach back, so the rows need no offsets. Corpus
    rows restart the state at document starts (``cu_seqlens``, a different count every batch), unless
    ``--no-document-resets`` lets it flow through them; then they go in as ``[B, T]`` too. With fixed
    shapes ``--compile`` compiles the loss as the MQAR step does (``compile_step``: on CUDA replayed
    from CUDA graphs); batches with offsets always run eagerly."""
    from gdn2.train.optim import build_optimizer, build_scheduler

    optimizer = build_optimizer(model, args.lr, args.weight_decay, (0.9, 0.95))
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 10)
    scheduler = build_scheduler(optimizer, warmup, args.steps, 0.1)
    generator = torch.Generator().manual_seed(derive_seed(cell.seed, "corpus"))
    order = data.needle_order(cell.seed)
    needles = round(args.batch_size * args.needle_fraction)
    B = args.batch_size
    flat = unpacked(args)
    eager = row_losses(model, amp, device.type)
    losses, compiled = eager, args.compile and flat
    graphs = compiled and device.type == "cuda"
    logged = []
    model.train()

    def gradients(fn, inputs) -> torch.Tensor:
        loss, parts = fn(*inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return parts

    for step in range(args.steps):
        batch = data.batch(B, needles, order, generator, args.needle_loss)
        ids = batch["input_ids"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        inputs = (ids, labels, batch["is_needle"].to(device))
        if not flat:
            inputs = (ids.view(1, -1), labels, inputs[2], batch["cu_seqlens"].to(device))
        if step == 0 and compiled:
            losses = compile_step(eager, device.type, inputs)
        if graphs:   # the previous replay's outputs (loss, parts, gradients) have been consumed
            torch.compiler.cudagraph_mark_step_begin()
        failed = None
        try:
            parts = gradients(losses, inputs)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:   # the compiler failing in the first steps (compiling at step 0, capturing the
            # CUDA graphs at step 1, forward or backward): eager rather than a lost cell
            if losses is eager or step > (1 if graphs else 0):
                raise
            failed = f"{type(e).__name__}: {str(e)[:300]}"
        if failed is not None:   # outside the handler, so the failed step's tensors are freed first
            print(f"WARNING: the compiled step failed ({failed}); training eagerly", file=sys.stderr, flush=True)
            losses, compiled, graphs = eager, False, False
            parts = gradients(losses, inputs)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        logged.append(parts.clone() if graphs else parts)   # a replay reuses its outputs
        if on_step is not None:
            on_step()
    curves = torch.stack(logged).float().cpu().tolist() if logged else []
    return {name: [s[i] for s in curves] for i, name in enumerate(("total", "corpus", "needle"))}, compiled
