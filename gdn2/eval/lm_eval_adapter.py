"""``lm-evaluation-harness`` on GDN-2 models: ``GDN2LM``, a ``lm_eval.api.model.TemplateLM``.

Importing this module imports ``lm_eval`` (``pip install lm-eval``) and registers the model
under the name ``gdn2``; ``import gdn2.eval`` does not import it.

How requests are served:

- ``loglikelihood``: ``TemplateLM`` splits each (context, continuation) into tokens; the
  context starts with the end-of-text token (the model's document start, ``add_bos_token``) and
  the continuation's tokens are scored, requests packed with ``cu_seqlens`` up to
  ``batch_tokens`` tokens per forward (``gdn2.eval.likelihood``).
- ``loglikelihood_rolling`` (perplexity tasks such as WikiText): the whole document conditioned
  on the end-of-text token, with full context: a document longer than ``batch_tokens`` is run in
  pieces that carry the model's cache, so nothing is cut into windows. With ``max_length`` set,
  lm-eval's own disjoint rolling windows are used instead (as for a Transformer).
- ``generate_until``: greedy (or, with ``do_sample``, sampled) decoding through the cache, one
  request at a time, stopped at any ``until`` string or end-of-text.

Running the standard zero-shot suite of the Gated DeltaNet papers (needs the Hugging Face Hub
to fetch the task data; ``gdn2 eval lm-eval`` does the same from the command line)::

    import lm_eval
    from gdn2.eval.lm_eval_adapter import GDN2LM

    lm = GDN2LM(pretrained="runs/gdn2-340m/final", device="cuda", dtype="bfloat16")
    out = lm_eval.simple_evaluate(model=lm, tasks=[
        "wikitext", "lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
        "openbookqa", "social_iqa", "boolq"], num_fewshot=0)
    print(lm_eval.utils.make_table(out))

    # or: gdn2 eval lm-eval --checkpoint runs/gdn2-340m/final --device cuda --dtype bfloat16 \\
    #         --tasks wikitext lambada_openai piqa hellaswag winogrande arc_easy arc_challenge \\
    #                 openbookqa social_iqa boolq

The papers report ``word_perplexity`` for WikiText, ``perplexity`` and ``acc`` for LAMBADA,
``acc_norm`` for HellaSwag, ARC-c (and, in some tables, PIQA and OpenBookQA) and ``acc``
elsewhere. Offline, point ``TaskManager(include_path=DIR)`` at task YAMLs whose
``dataset_path: json`` reads local files (see ``tests/eval/test_harness_lm_eval.py``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("the lm-eval adapter needs lm-evaluation-harness: pip install lm-eval") from e

from .likelihood import progress_bar, sequence_logprobs

_DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16, "half": torch.float16, "float64": torch.float64}


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@register_model("gdn2")
class GDN2LM(TemplateLM):
    """A ``GDN2ForCausalLM`` and its ``gdn2.data.Tokenizer`` as an lm-eval model.

    Args:
        pretrained: a checkpoint directory (``gdn2.eval.load_checkpoint``); or pass ``model`` and
            ``tokenizer`` objects instead. From lm-eval's command-line style strings:
            ``GDN2LM.create_from_arg_string("pretrained=DIR,device=cuda,dtype=bfloat16")``.
        device, dtype: where and in what precision to run (``dtype`` a torch dtype or its name).
        batch_tokens: tokens per forward when scoring (requests are packed up to it).
        max_length: ``None`` (default): no truncation, full context (the recurrent state has no
            window). An int: contexts are cut to their last ``max_length`` tokens and
            ``loglikelihood_rolling`` uses lm-eval's windows of that size.
        add_bos_token: start every context with the end-of-text token (as the training data
            starts documents).
        max_gen_toks: ``generate_until``'s default limit.
        batch_size, max_batch_size: accepted for lm-eval's interface; ``batch_tokens`` governs.
    """

    def __init__(self, pretrained: Optional[str] = None, model=None, tokenizer=None, device: Optional[str] = None,
                 dtype: Union[str, torch.dtype, None] = None, batch_tokens: int = 8192,
                 max_length: Optional[int] = None, add_bos_token: bool = True, max_gen_toks: int = 256,
                 batch_size=None, max_batch_size=None, seed: int = 1234, **kwargs):
        super().__init__()
        if isinstance(dtype, str):
            if dtype not in _DTYPES and dtype != "auto":
                raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
            dtype = _DTYPES.get(dtype)
        if pretrained is not None:
            if model is not None or tokenizer is not None:
                raise ValueError("pass either pretrained=DIR or model= and tokenizer=, not both")
            from .checkpoint import load_checkpoint
            model, tokenizer = load_checkpoint(pretrained, device=device, dtype=dtype)
        elif model is None or tokenizer is None:
            raise ValueError("GDN2LM needs pretrained=DIR, or both model= and tokenizer=")
        elif device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_tokens = int(batch_tokens)
        self._max_length = None if max_length in (None, "None", "") else int(max_length)
        self.add_bos_token = _as_bool(add_bos_token)
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        self.batch_size = batch_size

    # What TemplateLM needs

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def max_length(self) -> Optional[int]:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def tokenizer_name(self) -> str:
        return f"gdn2-bpe-{self.tokenizer.vocab_size}"

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> List[int]:
        """Token ids of ``string``, starting with the end-of-text token unless
        ``add_special_tokens`` is False or ``add_bos_token`` is off (never twice)."""
        ids = self.tokenizer.encode(string)
        add = self.add_bos_token if add_special_tokens is None else add_special_tokens and self.add_bos_token
        if add and (not ids or ids[0] != self.eot_token_id):
            ids = [self.eot_token_id] + ids
        return ids

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in (self.tokenizer.eos_id, self.tokenizer.pad_id)]
        return self.tokenizer.decode(tokens)

    def _truncate(self, tokens: List[int], n: int) -> Tuple[List[int], int]:
        """Keep the last ``max_length + 1`` tokens (``max_length`` inputs), as lm-eval's HF model does."""
        if self._max_length is not None and len(tokens) > self._max_length + 1:
            tokens = tokens[-(self._max_length + 1):]
        return tokens, min(n, len(tokens) - 1)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> List[Tuple[float, bool]]:
        """``requests``: ``((context, continuation), context_ids, continuation_ids)`` triples."""
        pairs = [self._truncate(list(context) + list(continuation), len(continuation))
                 for _, context, continuation in requests]
        results = sequence_logprobs(self.model, pairs, batch_tokens=self.batch_tokens, progress=not disable_tqdm,
                                    desc="loglikelihood")
        for (key, _, _), answer in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        """Log-likelihood of each whole string, conditioned on the end-of-text token."""
        pairs, owners = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string, add_special_tokens=False)
            if self._max_length is None:
                windows = [([self.prefix_token_id] + tokens, len(tokens))] if tokens else []
            else:
                windows = [(context + prediction, len(prediction)) for context, prediction in map(
                    make_disjoint_window,
                    get_rolling_token_windows(tokens, self.prefix_token_id, self._max_length, context_len=1))]
            pairs.extend(windows)
            owners.extend([index] * len(windows))
        scores = sequence_logprobs(self.model, pairs, batch_tokens=self.batch_tokens, progress=not disable_tqdm,
                                   desc="loglikelihood_rolling")
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        """Continuations of each context, cut before the first ``until`` string."""
        from ..models.generation import sample_next

        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        outputs = []
        for req in progress_bar(requests, desc="generate_until", enabled=not disable_tqdm):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(next((gen_kwargs[k] for k in ("max_gen_toks", "max_new_tokens", "max_tokens")
                                if gen_kwargs.get(k) is not None), self.max_gen_toks))
            temperature = float(gen_kwargs.get("temperature") or 0.0)
            if not _as_bool(gen_kwargs.get("do_sample", temperature > 0)):
                temperature = 0.0
            ids = self.tok_encode(context)
            if self._max_length is not None:
                ids = ids[-max(self._max_length - max_new, 1):]
            text = self._generate(ids, max_new, until, temperature, gen_kwargs.get("top_k"), gen_kwargs.get("top_p"),
                                  generator, sample_next)
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
            outputs.append(text)
        return outputs

    def _generate(self, ids: List[int], max_new: int, until: List[str], temperature: float, top_k, top_p,
                  generator: torch.Generator, sample_next) -> str:
        cache = self.model.init_cache(1)
        inputs = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model(inputs, past_key_values=cache, logits_to_keep=1).logits[:, -1]
        new: List[int] = []
        text = ""
        for _ in range(max_new):
            token = sample_next(logits, temperature, None if top_k is None else int(top_k),
                                None if top_p is None else float(top_p), generator)
            if int(token) == self.eot_token_id:
                break
            new.append(int(token))
            text = self.tokenizer.decode(new)
            if any(stop and stop in text for stop in until):
                break
            logits = self.model(token, past_key_values=cache).logits[:, -1]
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        return text
