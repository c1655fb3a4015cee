"""The MQAR training step on a GPU: compiled and replayed from CUDA graphs, with a mixture batch's
length groups inside one graph, it trains as the eager step does (the Triton kernels' chunk
tables for every group's shape made before capture)."""

import pytest

from gdn2.eval.mqar_train import mqar_config, train_mqar

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("mixer", ["gdn2", "attention_conv"])
def test_compiled_mixture_steps_on_cuda_give_the_eager_losses(mixer):
    mixture = [(64, 4, 3.0), (128, 8, 1.0), (256, 16, 1.0), (256, 32, 1.0)]
    run = lambda compile: train_mqar(mqar_config(mixer, vocab_size=1024, hidden_size=64), 64, 4,  # noqa: E731
                                     steps=6, batch_size=32, num_test=32, mixture=mixture, compile=compile,
                                     device="cuda", test_settings=[(256, 32)])
    eager, compiled = run(False), run(True)
    # one graph replayed: a replay that read stale inputs or offsets would repeat or diverge
    assert compiled.losses == pytest.approx(eager.losses, rel=2e-3, abs=1e-4)
    assert len(set(compiled.losses)) == len(compiled.losses)
