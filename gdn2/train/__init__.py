"""Training ``GDN2ForCausalLM``: the ``gdn2 train`` command and what it is made of.

    from gdn2.train import TrainConfig, train
    summary = train(TrainConfig.from_preset("debug", steps=50))    # seconds on a CPU
    summary["initial_eval"]["ppl"], summary["final_eval"]["ppl"], summary["sample"]

- ``config.py``: ``TrainConfig`` (one dataclass; its field help is the command-line help) and presets;
- ``optim.py``: AdamW without weight decay on ``A_log``, ``dt_bias``, norms, biases and embeddings;
  warm-up + cosine schedule;
- ``loop.py``: ``Trainer`` (packed batches with ``cu_seqlens``, gradient accumulation, clipping,
  bfloat16 autocast on GPU, held-out evaluation, exact resume);
- ``checkpoint.py``: atomic checkpoints (model as ``save_pretrained``, tokenizer, optimizer,
  scheduler, data position, RNG states, config);
- ``distributed.py``: ``torchrun`` with DDP or FSDP2 (``fully_shard``), gloo on CPU, NCCL on GPU;
- ``metrics.py``: JSON-lines log, TensorBoard when installed, the loss-curve PNG;
- ``sampling.py``: text from a checkpoint (``gdn2 generate``); ``commands.py``: the two commands.

Needs ``pip install 'gdn2[hf,data]'`` and ``tqdm``.
"""

from __future__ import annotations

from typing import Dict, Optional

from .config import PRESETS, TrainConfig
from .loop import Trainer


def train(config: TrainConfig, resume: Optional[str] = None, overwrite: bool = False,
          verbose: bool = True) -> Dict:
    """Run ``config`` (or continue the checkpoint ``resume``) to its last step; returns
    ``Trainer.run``'s summary."""
    trainer = Trainer(config, resume=resume, overwrite=overwrite, verbose=verbose)
    try:
        return trainer.run()
    finally:
        trainer.close()


__all__ = ["PRESETS", "TrainConfig", "Trainer", "train"]
