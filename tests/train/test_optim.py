"""The AdamW groups (no decay on A_log, dt_bias, norms, biases, embeddings) and the LR schedule."""

import math

import pytest
import torch

from gdn2.models import GDN2Config, GDN2ForCausalLM
from gdn2.train.optim import build_optimizer, build_scheduler, lr_factor, no_decay_names


def test_weight_decay_groups():
    model = GDN2ForCausalLM(GDN2Config.from_preset("tiny", pattern="LA", vocab_size=300))
    model.model.layers[0].mlp.up_proj.bias = torch.nn.Parameter(torch.zeros(384))   # a bias, to see it excluded
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, keep = optimizer.param_groups
    assert (decay["weight_decay"], keep["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in keep["params"]}
    assert decayed.isdisjoint(kept) and decayed | kept == set(names.values())   # tied lm_head counted once

    for name in kept:
        assert name.endswith(("A_log", "dt_bias", "norm.weight", ".bias", "embed_tokens.weight")), name
    assert {"model.layers.0.mixer.A_log", "model.layers.0.mixer.dt_bias", "model.layers.0.mixer.o_norm.weight",
            "model.layers.1.mixer_norm.weight", "model.norm.weight", "model.embed_tokens.weight",
            "model.layers.0.mlp.up_proj.bias"} <= kept
    for name in decayed:
        assert name.endswith("weight") and "norm" not in name and "embed" not in name, name
    assert {"model.layers.0.mixer.q_proj.weight", "model.layers.0.mixer.q_conv.weight",
            "model.layers.1.mixer.q_proj.weight", "model.layers.1.mlp.down_proj.weight"} <= decayed
    assert set(model.no_weight_decay()) <= no_decay_names(model)


def test_lr_schedule():
    warmup, total, floor = 10, 100, 0.1
    factors = [lr_factor(s, warmup, total, floor) for s in range(total + 5)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[warmup:-1], factors[warmup + 1:], strict=True))   # cosine: never rises
    assert factors[(warmup + total) // 2] == pytest.approx(floor + (1 - floor) / 2)
    assert factors[total:] == pytest.approx([floor] * 5)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(optimizer, warmup, total, floor)
    for step in range(3):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * lr_factor(step, warmup, total, floor))
        optimizer.step()
        scheduler.step()
    assert math.isclose(scheduler.state_dict()["last_epoch"], 3)
