"""GDN2ForCausalLM: prefill + decode == full forward, constant-size state, packing, config checks."""

import pytest
import torch

from gdn2.layers import GatedDeltaNet2, KVCache, RecurrentState, SlidingKVCache
from gdn2.models import PRESETS, GDN2Config, GDN2ForCausalLM
from gdn2.testing import assert_close

F64 = torch.float64
PATTERNS = ["L", "LS", "LLLA", "A"]


@pytest.mark.parametrize("pattern,attn_conv,rope", [(p, 0, True) for p in PATTERNS] + [("LS", 4, True), ("A", 3, False)])
@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(make_model, pattern, attn_conv, rope):
    # sliding_window 5 < 24 tokens; attn_conv: the attention layers' short convolutions
    model = make_model(F64, pattern=pattern, attn_conv_size=attn_conv, attn_rope=rope)
    ids = torch.randint(0, 64, (2, 24))
    full = model(ids, use_cache=False).logits
    cache = model.init_cache(2)
    pieces = [model(ids[:, :3], past_key_values=cache).logits,       # prompt shorter than the window
              model(ids[:, 3:11], past_key_values=cache).logits]     # a second prefill crossing it
    for t in range(11, 24):
        pieces.append(model(ids[:, t:t + 1], past_key_values=cache).logits)
    assert cache.get_seq_length() == 24
    assert_close(f"pattern {pattern}", torch.cat(pieces, 1), full, rtol=1e-9)


@torch.no_grad()
def test_recurrent_cache_does_not_grow(make_model):
    model = make_model(pattern="L")
    cache = model.init_cache(1)
    before = cache.nbytes()
    assert before > 0 and all(isinstance(layer, RecurrentState) for layer in cache.layers)
    assert all(layer.state.dtype == torch.float32 for layer in cache.layers)
    ids = torch.randint(0, 64, (1, 40))
    model(ids[:, :8], past_key_values=cache)
    sizes = []
    for t in range(8, 40):
        model(ids[:, t:t + 1], past_key_values=cache)
        sizes.append(cache.nbytes())
    assert sizes == [before] * len(sizes)


@torch.no_grad()
def test_hybrid_caches_grow_only_for_full_attention(make_model):
    model = make_model(pattern="LSA")
    cache = model.init_cache(1)
    model(torch.randint(0, 64, (1, 30)), past_key_values=cache)
    kinds = [type(layer) for layer in cache.layers]
    assert kinds == [RecurrentState, SlidingKVCache, KVCache, RecurrentState]
    assert cache.layers[1].k.shape[2] == 5 and cache.layers[2].k.shape[2] == 30
    assert cache.is_linear == [True, False, False, True]


@pytest.mark.parametrize("pattern", ["LS", "LLLA"])
@torch.no_grad()
def test_packed_documents_equal_separate_runs(make_model, pattern):
    model = make_model(F64, pattern=pattern)
    lengths = [9, 1, 14]
    docs = [torch.randint(0, 64, (1, n)) for n in lengths]
    cu = torch.tensor([0, 9, 10, 24])
    packed = model(torch.cat(docs, 1), cu_seqlens=cu).logits
    for i, doc in enumerate(docs):
        assert_close(f"doc {i}", packed[:, cu[i]:cu[i + 1]], model(doc, use_cache=False).logits, rtol=1e-12)


@torch.no_grad()
def test_packed_loss_is_the_per_document_loss(make_model):
    model = make_model(F64, pattern="LS")
    docs = [torch.randint(0, 64, (1, n)) for n in (6, 11)]
    packed = model(torch.cat(docs, 1), labels=torch.cat(docs, 1), cu_seqlens=torch.tensor([0, 6, 17])).loss
    losses = [model(d, labels=d, use_cache=False).loss for d in docs]
    expected = (losses[0] * 5 + losses[1] * 10) / 15          # predictions inside each document only
    assert_close("packed loss", packed, expected, rtol=1e-12)


def test_a_few_steps_of_training_lower_the_loss(make_model):
    torch.manual_seed(0)
    model = make_model(pattern="LS").train()
    ids = torch.arange(48).remainder(7).view(1, 48)           # a repeating pattern is easy to learn
    decay = model.no_weight_decay()
    assert decay and all(name.endswith(("A_log", "dt_bias")) for name in decay)
    named = dict(model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if n not in decay], "weight_decay": 0.1},
              {"params": [named[n] for n in sorted(decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_layers_follow_the_pattern(small_config):
    model = GDN2ForCausalLM(small_config(pattern="LLS", num_hidden_layers=5))
    assert [block.kind for block in model.model.layers] == ["L", "L", "S", "L", "L"]
    assert isinstance(model.model.layers[0].mixer, GatedDeltaNet2)
    assert model.model.layers[2].mixer.config.window == 5
    untied = GDN2ForCausalLM(small_config(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_mixer_setting_reaches_the_layers(small_config):
    model = GDN2ForCausalLM(small_config(mixer="kda", num_v_heads=4, negative_eigen=True))
    mixer = model.model.layers[0].mixer
    assert mixer.config.erase == "tied" and mixer.config.num_v_heads == 4 and mixer.config.negative_eigen


def test_presets():
    assert set(PRESETS) >= {"tiny", "recurrent", "hybrid", "hybrid_3to1", "paper_1.3b", "paper_1.3b_hybrid"}
    assert GDN2Config.from_preset("hybrid").pattern == "LS"
    assert GDN2Config.from_preset("hybrid_3to1").pattern == "LLLA"
    for name in ("paper_1.3b", "paper_1.3b_hybrid"):
        config = GDN2Config.from_preset(name)
        assert (config.hidden_size, config.num_heads, config.head_k_dim, config.head_v_dim) == (2048, 16, 128, 128)
        with torch.device("meta"):
            params = GDN2ForCausalLM(config).num_parameters()
        assert 1.2e9 < params < 1.4e9, (name, params)
    tiny = GDN2ForCausalLM(GDN2Config.from_preset("tiny"))
    assert tiny.num_parameters() < 2e6


@pytest.mark.parametrize("overrides, field", [
    (dict(pattern="LXA"), "pattern"),
    (dict(pattern=""), "pattern"),
    (dict(num_v_heads=3), "num_v_heads"),
    (dict(hidden_size=30, num_heads=4, head_k_dim=None, pattern="LA"), "num_heads"),
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(hidden_size=36, num_attention_heads=8, head_dim=None, pattern="LS"), "num_attention_heads"),
    (dict(head_dim=7), "head_dim"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(sliding_window=-4), "sliding_window"),
    (dict(mixer="mamba"), "mixer"),
    (dict(backend="cuda"), "backend"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(attn_conv_size=-1), "attn_conv_size"),
    (dict(attn_rope="no"), "attn_rope"),
])
def test_bad_config_raises_naming_the_field(small_config, overrides, field):
    with pytest.raises(ValueError, match=field):
        small_config(**overrides)


def test_packed_with_cache_is_refused(make_model):
    model = make_model()
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(torch.randint(0, 64, (1, 6)), cu_seqlens=torch.tensor([0, 2, 6]), past_key_values=model.init_cache(1))
    with pytest.raises(ValueError, match="batch size 1"):
        model(torch.randint(0, 64, (2, 6)), cu_seqlens=torch.tensor([0, 2, 6]))


def test_widths_of_absent_layer_kinds_are_not_checked(small_config):
    """A pattern without attention layers takes any attention head count (their defaults need not
    divide hidden_size), and one without L layers any mixer head count."""
    recurrent = small_config(pattern="L", hidden_size=36, num_attention_heads=8, head_dim=None)
    attention = small_config(pattern="A", hidden_size=30, num_heads=4, head_k_dim=None, head_v_dim=None)
    assert recurrent.head_dim is None and attention.head_k_dim is None
    assert attention.head_dim is not None   # derived for its own layers
    from gdn2.memory import inference_state_bytes
    assert inference_state_bytes(recurrent, 128) > 0
    with pytest.raises(ValueError, match="head_dim"):
        inference_state_bytes(recurrent, 128, pattern="A")


def test_bad_model_inputs_are_named(make_model):
    """Packed offsets, a cache of another batch size, and input ids or labels of the wrong shape
    are refused before any layer runs, naming the argument."""
    model = make_model(pattern="LSA")
    ids = torch.randint(0, 64, (1, 8))
    with pytest.raises(ValueError, match="^cu_seqlens must end at T = 8"):
        model(ids, cu_seqlens=torch.tensor([0, 3, 6]))
    with pytest.raises(TypeError, match="^cu_seqlens must be a torch.Tensor"):
        model(ids, cu_seqlens=[0, 3, 8])
    with pytest.raises(ValueError, match="cache holds 2 sequence"):
        model(ids, past_key_values=model.init_cache(2))
    with pytest.raises(ValueError, match=r"^input_ids must have shape \[B, T\]"):
        model(ids[0])
    for labels in (ids[0], torch.randint(0, 64, (2, 8))):
        with pytest.raises(ValueError, match="^labels must cover"):
            model(ids, labels=labels)
    layer = model.model.layers[0].mixer
    with pytest.raises(ValueError, match="^cu_seqlens must end at T = 8"):
        layer(torch.randn(1, 8, 32), cu_seqlens=torch.tensor([0, 3, 6]))


def test_packed_empty_documents_only(make_model):
    for pattern in ("L", "A", "S"):
        out = make_model(pattern=pattern)(torch.zeros(1, 0, dtype=torch.long), cu_seqlens=torch.tensor([0, 0]))
        assert out.logits.shape == (1, 0, 64)


def test_trainer_does_not_pass_loss_kwargs():
    """Trainer reads ``accepts_loss_kwargs``; forward takes **kwargs for generate but computes a
    mean loss itself, so Trainer must keep dividing by its accumulation steps."""
    from gdn2.models import GDN2ForCausalLM
    assert GDN2ForCausalLM.accepts_loss_kwargs is False


def test_a_reordered_cache_takes_its_new_batch(make_model):
    """``reorder_cache`` keeps the rows it is given (beam search): the batch check follows it."""
    model = make_model(pattern="LA")
    cache = model.init_cache(2)
    model(torch.randint(0, 64, (2, 5)), past_key_values=cache)
    cache.reorder_cache(torch.tensor([1]))
    assert cache.batch_size == 1
    model(torch.randint(0, 64, (1, 1)), past_key_values=cache)
    with pytest.raises(ValueError, match="cache holds 1 sequence"):
        model(torch.randint(0, 64, (2, 1)), past_key_values=cache)
