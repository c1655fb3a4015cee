"""The inference-memory estimator against the cache a real model allocates, and the CLI."""

import pytest
import torch

from gdn2 import cli
from gdn2.memory import CONTEXTS, inference_state_bytes, layer_state_bytes, memory_table
from gdn2.models import GDN2Config


@pytest.mark.parametrize("pattern", ["L", "A", "LS", "LLLA"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@torch.no_grad()
def test_estimate_equals_allocated_cache_bytes(make_model, pattern, dtype):
    model = make_model(dtype, pattern=pattern, num_v_heads=4, head_v_dim=8, num_hidden_layers=5)
    cache = model.init_cache(2)
    seen = 0
    for chunk in (3, 4, 1, 9, 1):                              # below, at and beyond the window of 5
        model(torch.randint(0, 64, (2, chunk)), past_key_values=cache)
        seen += chunk
        assert cache.nbytes() == inference_state_bytes(model.config, seen, batch_size=2, dtype=dtype), seen


def test_spec_formulas():
    config = GDN2Config.from_preset("paper_1.3b")
    L = config.num_hidden_layers
    state = L * 16 * 128 * 128 * 4 + L * 3 * (3 * 2048) * 2        # float32 state + bf16 conv windows
    assert inference_state_bytes(config, 10 ** 6) == state == inference_state_bytes(config, 1)
    kv = 2 * L * 16 * 128 * 2 * 4096                               # 2 * layers * heads * head_dim * bytes * tokens
    assert inference_state_bytes(config, 4096, pattern="A") == kv
    assert inference_state_bytes(config, 4096, pattern="LLLA") == (
        (L // 4) * layer_state_bytes(config, "A", 4096) + (L - L // 4) * layer_state_bytes(config, "L", 4096))
    swa = inference_state_bytes(config, 2 ** 20, pattern="LS")
    assert swa == inference_state_bytes(config, config.sliding_window, pattern="LS")


def test_table_orders_the_layouts_at_long_context():
    table = memory_table(GDN2Config.from_preset("paper_1.3b"))
    at_1m = {name: values[-1] for name, values in table.items()}
    assert CONTEXTS[0] == 1024 and CONTEXTS[-1] == 2 ** 20
    assert at_1m["recurrent (L)"] < at_1m["SWA hybrid (LS)"] < at_1m["3:1 hybrid (LLLA)"] < at_1m["full attention"]
    assert table["recurrent (L)"] == [table["recurrent (L)"][0]] * len(CONTEXTS)


def test_cli_prints_a_table_and_draws_a_plot(tmp_path, capsys):
    assert cli.main(["memory", "--preset", "tiny", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "full attention" in out and "1M" in out and "GiB" in out
    pytest.importorskip("matplotlib")
    path = tmp_path / "memory.png"
    assert cli.main(["memory", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
