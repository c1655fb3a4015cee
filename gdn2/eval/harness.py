"""RULER evaluation of a model: generate the samples, decode greedily, score, write the results.

    model, tokenizer = load_checkpoint("runs/tiny/final")
    result = run_ruler(model, tokenizer, ["S-NIAH-1", "S-NIAH-2"], [1024, 2048], num_samples=20,
                       out_dir="runs/tiny/final/eval")
    print(result.table)

Every prompt starts with the tokenizer's end-of-text token, which is how the training data
begins a document; the generator counts it, so ``prompt + answer`` still fits the target
length. Decoding is greedy with the model's cache: one prefill of the prompt, then one token
per step (constant memory for the recurrent layers), at most the sample's ``max_new_tokens``,
stopping at end-of-text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch

from .likelihood import progress_bar
from .ruler import TASKS, NiahTask, ProseCorpus, generate_ruler
from .scoring import ruler_table, score_ruler, write_ruler_json

RULER_JSON = "ruler.json"
RULER_MARKDOWN = "ruler.md"


class WithBos:
    """A tokenizer whose ``encode`` starts every text with ``bos_id`` (what the model sees)."""

    def __init__(self, tokenizer, bos_id: int):
        self.tokenizer, self.bos_id = tokenizer, bos_id

    def encode(self, text: str) -> List[int]:
        return [self.bos_id] + self.tokenizer.encode(text)


@torch.no_grad()
def greedy_continue(model, ids: Sequence[int], max_new_tokens: int, eos_id: Optional[int] = None) -> List[int]:
    """Up to ``max_new_tokens`` greedy tokens after ``ids``, ending early after ``eos_id`` (which is
    not returned); a prefill then one token per step through the model's cache."""
    from ..models.generation import decode

    device = model.lm_head.weight.device
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
    new = decode(model, input_ids, max_new_tokens, eos_token_id=eos_id)[0, len(ids):].tolist()
    return new[:new.index(eos_id)] if eos_id in new else new


@dataclass
class RulerResult:
    """Per-(task, length) ``scores`` (``score_ruler`` rows), the ``samples`` and ``predictions``."""

    scores: List[dict]
    samples: List[dict] = field(repr=False)
    predictions: List[str] = field(repr=False)
    meta: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        return ruler_table(self.scores)

    def write(self, out_dir: Union[str, Path]) -> Tuple[Path, Path]:
        """``ruler.json`` (meta, scores, every sample with its prediction) and ``ruler.md`` in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out_dir / RULER_JSON, out_dir / RULER_MARKDOWN
        write_ruler_json(json_path, self.scores, self.samples, self.predictions, self.meta)
        about = ", ".join(f"{k}: {v}" for k, v in self.meta.items() if k in ("checkpoint", "num_samples", "seed"))
        md_path.write_text(f"# RULER accuracy (%)\n\n{about}\n\n{self.table}", encoding="utf-8")
        return json_path, md_path


def run_ruler(model, tokenizer, tasks: Iterable[Union[str, NiahTask]] = tuple(TASKS),
              lengths: Iterable[int] = (1024, 2048, 4096), num_samples: int = 20, seed: int = 42, *,
              out_dir: Union[str, Path, None] = None, haystack: Union[Iterable[str], ProseCorpus, None] = None,
              word_lists: Optional[Tuple[Sequence[str], Sequence[str]]] = None,
              tokens_to_generate: Optional[int] = None, progress: bool = True,
              meta: Optional[dict] = None) -> RulerResult:
    """RULER accuracy of ``model`` on ``tasks`` x ``lengths``, ``num_samples`` samples each.

    Args:
        model: a ``GDN2ForCausalLM`` (in eval mode).
        tokenizer: a ``gdn2.data.Tokenizer`` (``encode``, ``decode``, ``eos_id``).
        tasks: names of ``ruler.TASKS`` (``S-NIAH-1`` ... ``MK-NIAH-1``, or RULER's names).
        lengths: context lengths in tokens (prompt + answer).
        num_samples: samples per (task, length), needle depths spread evenly.
        seed: the samples are a function of the seed (and task, length, index).
        out_dir: write ``ruler.json`` and ``ruler.md`` there.
        haystack, word_lists, tokens_to_generate: passed to ``generate_ruler``.
        progress: show a progress bar.
        meta: extra entries for the JSON's ``meta`` (e.g. the checkpoint path).
    """
    lengths = [int(n) for n in lengths]
    encoder = WithBos(tokenizer, tokenizer.eos_id)
    start = time.perf_counter()
    samples = generate_ruler(tasks, lengths, num_samples, encoder, seed=seed, haystack=haystack,
                             word_lists=word_lists, tokens_to_generate=tokens_to_generate)
    generated = time.perf_counter()
    predictions = []
    for sample in progress_bar(samples, desc="RULER", enabled=progress, unit="sample"):
        new = greedy_continue(model, sample["input_ids"], sample["max_new_tokens"], tokenizer.eos_id)
        predictions.append(tokenizer.decode(new))
    done = time.perf_counter()
    info = {"tasks": list(dict.fromkeys(s["task"] for s in samples)), "lengths": lengths,
            "num_samples": num_samples, "seed": seed, "bos_token_id": tokenizer.eos_id, "decoding": "greedy",
            "generate_seconds": round(generated - start, 3), "decode_seconds": round(done - generated, 3)}
    result = RulerResult(score_ruler(predictions, samples), samples, predictions, {**(meta or {}), **info})
    if out_dir is not None:
        result.write(out_dir)
    return result
