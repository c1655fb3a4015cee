"""Hugging Face integration: Auto-class registration, safetensors round trip, ``generate``."""

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

import gdn2
from gdn2.models import GDN2Config, GDN2ForCausalLM


def test_import_gdn2_registers_the_auto_classes():
    assert "models" in gdn2.__all__
    assert isinstance(AutoConfig.for_model("gdn2"), GDN2Config)


@pytest.mark.parametrize("pattern, tied, attn_conv", [("LS", True, 0), ("LLLA", False, 0), ("LA", True, 4)])
def test_save_and_load_round_trip(small_config, tmp_path, pattern, tied, attn_conv):
    model = GDN2ForCausalLM(small_config(pattern=pattern, tie_word_embeddings=tied, mixer="gdn2_b_only",
                                         attn_conv_size=attn_conv)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, GDN2Config) and config.pattern == pattern and config.mixer == "gdn2_b_only"
    assert config.attn_conv_size == attn_conv
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GDN2ForCausalLM)
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    ids = torch.randint(0, 64, (2, 13))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.no_weight_decay() == model.no_weight_decay()


def _greedy_without_cache(model, ids, steps):
    with torch.no_grad():
        for _ in range(steps):
            next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], 1)
    return ids


@pytest.mark.parametrize("pattern", ["L", "LS", "LLLA"])
def test_generate_greedy_matches_recomputation(make_model, pattern):
    model = make_model(pattern=pattern)
    ids = torch.randint(0, 64, (2, 7))
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(out, _greedy_without_cache(model, ids, 12))


def test_generate_sampling_and_beams(make_model):
    model = make_model(pattern="LS")
    ids = torch.randint(0, 64, (2, 6))
    torch.manual_seed(1)
    a = model.generate(ids, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=10, top_p=0.9)
    torch.manual_seed(1)
    b = model.generate(ids, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=10, top_p=0.9)
    assert a.shape == (2, 16) and torch.equal(a, b) and torch.equal(a[:, :6], ids)
    assert int(a.min()) >= 0 and int(a.max()) < 64
    beams = model.generate(ids, max_new_tokens=8, num_beams=3, do_sample=False)
    assert torch.equal(beams, model.generate(ids, max_new_tokens=8, num_beams=3, do_sample=False, use_cache=False))


def test_generate_continues_a_given_cache(make_model):
    model = make_model(pattern="LS")
    ids = torch.randint(0, 64, (1, 9))
    cache = model.init_cache(1)
    with torch.no_grad():
        model(ids[:, :5], past_key_values=cache)
    name = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"
    out = model.generate(ids, max_new_tokens=6, do_sample=False, **{name: cache})
    assert torch.equal(out, _greedy_without_cache(model, ids, 6))


def test_padding_is_refused(make_model):
    model = make_model()
    ids = torch.randint(0, 64, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(ids, attention_mask=mask)
