import contextlib
import fcntl
import gc
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's interpreter (must be set before they are defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Tiny models gain nothing from intra-op threads, and OpenMP's spinning threads run many times
# slower when another process holds a core (the distributed tests run two processes on two).
ONE_THREAD_DIRS = {"bench", "eval", "experiments", "train"}


@pytest.fixture(autouse=True)
def _one_thread(request):
    if Path(str(request.node.fspath)).parent.name not in ONE_THREAD_DIRS:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The float64 recurrence keeps every step's state for its backward: at 4100 tokens and eight
# 128 x 128 heads one test holds ~10 GB. Sixteen xdist workers, each keeping its allocator's cache,
# ran an 80 GB card out of memory (54 failures, H100, 2026-12-07), so tests marked large_memory
# take one of a few slots shared across processes, and every GPU test hands its cache back.
LARGE_MEMORY_SLOTS = 3


@contextlib.contextmanager
def _large_memory_slot():
    folder = Path(tempfile.gettempdir())
    while True:
        for i in range(LARGE_MEMORY_SLOTS):
            f = open(folder / f"gdn2-large-memory-{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def _gpu_memory(request):
    if "gpu" not in request.keywords or not torch.cuda.is_available():
        yield
        return
    large = request.node.get_closest_marker("large_memory") is not None
    with _large_memory_slot() if large else contextlib.nullcontext():
        yield
        gc.collect()
        torch.cuda.empty_cache()


@pytest.fixture
def walk_scale_past_range(monkeypatch):
    """The one-pass walk's power-of-two scale of sequence 0 made 2^20 too large, so that its float16
    products overflow: the range guard's case (``state.F16_PRODUCTS``). The walk at two stages, where
    it takes float16 products (on a card ``state.f16_walk_tiling`` gives a walk of more programs
    than multiprocessors one stage and TF32 products, and the guard would not run)."""
    from gdn2.ops.gdn2.triton import state
    scale = state.power_of_two_scale
    monkeypatch.setattr(state, "F16_WALK_STAGES", 2)

    def too_large(*args):
        s = scale(*args)
        s[0] *= 2.0 ** 20
        return s
    monkeypatch.setattr(state, "power_of_two_scale", too_large)


@pytest.fixture
def loss_at_1e7(monkeypatch):
    """The Triton backward handed dO and the final-state cotangent scaled by 1e-7, as a loss averaged
    over many tokens gives them: gradients far under float16's normal range (6e-5)."""
    from gdn2.ops.gdn2.triton import chunk
    bwd = chunk.chunk_bwd

    def small(q, k, v, g, b, w, h0, scale, cu, chunks, do, dht, **kwargs):
        return bwd(q, k, v, g, b, w, h0, scale, cu, chunks, do * 1e-7, dht * 1e-7 if dht is not None else None,
                   **kwargs)
    monkeypatch.setattr(chunk, "chunk_bwd", small)
