"""``TrainConfig``: everything a training run depends on, in one dataclass, with named presets.

Each field's ``help`` metadata is also its command-line help (``gdn2 train --help``), where the
field ``seq_len`` is the flag ``--seq-len``. A checkpoint stores the config as JSON, and
``--resume`` starts from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


def _field(default, help: str, **kwargs):
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """One training run. The defaults are the ``tiny`` preset: the README's CPU run.

    >>> TrainConfig.from_preset("debug", steps=5).steps
    5
    """

    # the run
    name: str = _field("tiny-kjv", "run name: logs and checkpoints go to OUT_DIR/NAME")
    out_dir: str = _field("runs", "parent directory of the run directories")
    seed: int = _field(0, "seed of the model initialisation, the data order and the sample")
    # the model
    model: str = _field("tiny", "GDN2Config preset (gdn2.models.PRESETS); vocab_size comes from the tokenizer")
    model_overrides: Dict[str, Any] = _field({}, "GDN2Config fields to override, e.g. pattern=LS backend=chunk",
                                             metavar="KEY=VALUE")
    # the data
    corpus: str = _field("kjv", "'kjv' (built in, offline), a .txt/.jsonl/.parquet file or directory, or "
                                "hf:DATASET[:CONFIG] (streamed from the Hugging Face Hub)")
    text_field: str = _field("text", "JSON field / Parquet or dataset column holding the text")
    heldout_every: int = _field(20, "every this-many-th document is held out for evaluation")
    tokenizer: Optional[str] = _field(None, "a tokenizer.json (or a directory holding one); default: train a "
                                            "byte-level BPE on the training documents")
    vocab_size: int = _field(2048, "vocabulary of the BPE trained when no --tokenizer is given")
    tokenizer_documents: int = _field(50_000, "train the BPE on at most this many documents (streams are endless)")
    seq_len: int = _field(256, "tokens per row")
    batch_size: int = _field(8, "rows per optimizer step, over all processes and accumulation steps")
    grad_accum: int = _field(1, "micro-batches accumulated per optimizer step (per process)")
    # the optimization
    steps: int = _field(220, "optimizer steps (the cosine schedule ends here)")
    lr: float = _field(3e-3, "peak learning rate")
    min_lr: float = _field(3e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _field(20, "steps of linear warm-up from 0 to --lr")
    weight_decay: float = _field(0.1, "AdamW decoupled weight decay (not on A_log, dt_bias, norms, biases, "
                                      "embeddings)")
    beta1: float = _field(0.9, "AdamW beta1")
    beta2: float = _field(0.95, "AdamW beta2")
    grad_clip: float = _field(1.0, "clip the global gradient norm to this (0: no clipping)")
    # evaluation, logging, checkpoints
    eval_every: int = _field(55, "evaluate on the held-out split every this many steps (and at the start and end)")
    eval_tokens: int = _field(16_384, "held-out tokens per evaluation (the first ones of the held-out split)")
    save_every: int = _field(110, "write a checkpoint every this many steps (and at the end)")
    keep_last: int = _field(2, "checkpoints kept; older ones are deleted")
    sample_prompt: str = _field("And God said", "prompt of the sample printed at the end")
    sample_tokens: int = _field(60, "tokens of the sample printed at the end (0: none)")
    # the hardware
    device: str = _field("auto", "'auto' (the process's GPU if there is one, else the CPU), 'cpu' or 'cuda'")
    autocast: bool = _field(True, "bfloat16 autocast on GPU (the CPU always trains in float32)")
    compile: bool = _field(False, "torch.compile the model")
    parallel: str = _field("ddp", "with several processes (torchrun): 'ddp' (replicated) or 'fsdp' (FSDP2 "
                                  "fully_shard)", choices=("ddp", "fsdp"))

    def __post_init__(self):
        for name in ("heldout_every", "vocab_size", "tokenizer_documents", "seq_len", "batch_size", "grad_accum",
                     "steps", "eval_every", "eval_tokens", "save_every", "keep_last"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "sample_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:   # the schedule is a fraction of it
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum = {self.grad_accum} must divide batch_size = {self.batch_size}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    @classmethod
    def from_preset(cls, preset: str, /, **overrides) -> "TrainConfig":
        """A named configuration (``PRESETS``) with any field overridden."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(sorted(PRESETS))}")
        return cls.from_dict({**PRESETS[preset], **overrides})

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """The config of ``values`` (e.g. a checkpoint's ``train_config.json``); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides) -> "TrainConfig":
        return self.from_dict({**self.to_dict(), **overrides})


PRESETS: Dict[str, Dict[str, Any]] = {
    # the README's main job: the tiny model on the King James Bible, ~3 minutes on 2 CPU cores
    "tiny": {},
    # seconds on a CPU: a smoke test of the whole pipeline
    "debug": dict(name="debug", model_overrides=dict(hidden_size=64, num_hidden_layers=2, head_k_dim=32,
                                                     head_v_dim=32, head_dim=32, intermediate_size=128),
                  vocab_size=512, seq_len=64, batch_size=4, steps=20, warmup_steps=4, eval_every=10,
                  eval_tokens=1024, save_every=10, sample_tokens=16),
    # a GPU recipe: the ~150M recurrent model on FineWeb-Edu streamed from the Hub (needs network)
    "small": dict(name="small-fineweb", model="recurrent", corpus="hf:HuggingFaceFW/fineweb-edu:sample-10BT",
                  vocab_size=32000, tokenizer_documents=100_000, seq_len=2048, batch_size=64, grad_accum=4,
                  steps=20_000, lr=1e-3, min_lr=1e-4, warmup_steps=1000, eval_every=500, eval_tokens=1 << 20,
                  save_every=1000, keep_last=3, sample_prompt="The", sample_tokens=100),
}
