import pytest

pytest.importorskip("transformers")

from gdn2.models import GDN2Config, GDN2ForCausalLM  # noqa: E402

SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=4, num_heads=2, head_k_dim=16, head_v_dim=16,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64, sliding_window=5,
             backend="chunk")


def _small_config(**overrides) -> GDN2Config:
    return GDN2Config(**{**SMALL, **overrides})


@pytest.fixture
def small_config():
    """A factory of ~30K-parameter configs: fast enough for float64 token-by-token decoding on a CPU."""
    return _small_config


@pytest.fixture
def make_model():
    """A factory of small models in eval mode (optionally cast to a dtype)."""
    def make(dtype=None, **overrides) -> GDN2ForCausalLM:
        model = GDN2ForCausalLM(_small_config(**overrides)).eval()
        return model if dtype is None else model.to(dtype)
    return make
