"""Perplexity per token and per byte on held-out documents (default: the King James held-out split).

Each document is scored as the training data presents it: ``<|endoftext|> doc``, the
end-of-text token standing for the document start, and every token of ``doc`` predicted from
all those before it (the trailing end-of-text is not scored, so the per-byte numbers count the
document's own bytes only and compare across tokenizers)::

    NLL        = -sum over documents and their tokens of log p(token | everything before it)
    per token  = exp(NLL / tokens)
    per byte   = exp(NLL / bytes)        bytes: UTF-8 bytes of the documents' text
    bits/byte  = NLL / bytes / ln 2

Documents are packed with ``cu_seqlens`` (see ``likelihood.sequence_logprobs``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional, Union

from .likelihood import sequence_logprobs


@dataclass
class PerplexityResult:
    """Totals over the documents; ``documents_nll`` etc. keep the per-document values."""

    nll: float          # nats, summed over every scored token
    tokens: int
    bytes: int
    documents: int
    documents_nll: List[float] = field(default_factory=list, repr=False)
    documents_tokens: List[int] = field(default_factory=list, repr=False)
    documents_bytes: List[int] = field(default_factory=list, repr=False)

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.nll / self.tokens)

    @property
    def byte_perplexity(self) -> float:
        return math.exp(self.nll / self.bytes)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / self.bytes / math.log(2)

    def summary(self) -> dict:
        """The totals and the three metrics (no per-document lists)."""
        return {"documents": self.documents, "tokens": self.tokens, "bytes": self.bytes, "nll": self.nll,
                "nll_per_token": self.nll / self.tokens, "token_perplexity": self.token_perplexity,
                "byte_perplexity": self.byte_perplexity, "bits_per_byte": self.bits_per_byte}

    def table(self, name: str = "") -> str:
        """A one-row markdown table."""
        s = self.summary()
        return ("| Data | Documents | Tokens | Bytes | PPL / token | PPL / byte | Bits / byte |\n"
                "|---|---:|---:|---:|---:|---:|---:|\n"
                f"| {name} | {s['documents']} | {s['tokens']} | {s['bytes']} | {s['token_perplexity']:.3f} | "
                f"{s['byte_perplexity']:.4f} | {s['bits_per_byte']:.4f} |\n")

    def write(self, path: Union[str, os.PathLike], meta: Optional[dict] = None) -> None:
        """JSON with ``meta``, the summary and the per-document values."""
        payload = {"meta": dict(meta or {}), **self.summary(), "per_document": {
            k: v for k, v in asdict(self).items() if k.startswith("documents_")}}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1)
            f.write("\n")


def perplexity(model, tokenizer, documents: Optional[Iterable[str]] = None, *, max_documents: Optional[int] = None,
               batch_tokens: int = 8192, progress: bool = True) -> PerplexityResult:
    """Perplexity of ``model`` on ``documents``.

    Args:
        model: a ``GDN2ForCausalLM``.
        tokenizer: a ``gdn2.data.Tokenizer`` (``encode``, ``eos_id``).
        documents: strings; default ``gdn2.data.kjv_documents("heldout")`` (59 chapters).
        max_documents: only the first this many (empty documents are skipped and not counted).
        batch_tokens: tokens per forward (documents are packed up to it; longer ones are run in
            pieces carrying the cache).
        progress: show a progress bar.
    """
    if documents is None:
        from ..data import kjv_documents
        documents = kjv_documents("heldout")
    from ..data.corpus import check_not_a_text
    check_not_a_text(documents)
    texts: List[str] = []
    for doc in documents:
        if max_documents is not None and len(texts) >= max_documents:
            break
        if doc:
            texts.append(doc)
    if not texts:
        raise ValueError("no (non-empty) documents to score")
    ids = tokenizer.encode_batch(texts) if hasattr(tokenizer, "encode_batch") else [tokenizer.encode(t) for t in texts]
    requests = [([tokenizer.eos_id] + doc_ids, len(doc_ids)) for doc_ids in ids]
    scores = sequence_logprobs(model, requests, batch_tokens=batch_tokens, progress=progress, desc="perplexity")
    nlls = [-logprob for logprob, _ in scores]
    tokens = [len(doc_ids) for doc_ids in ids]
    sizes = [len(t.encode("utf-8")) for t in texts]
    return PerplexityResult(nll=math.fsum(nlls), tokens=sum(tokens), bytes=sum(sizes), documents=len(texts),
                            documents_nll=nlls, documents_tokens=tokens, documents_bytes=sizes)
