import math

import pytest
import torch
from torch import nn

from tubelet.engine.optim import param_groups
from tubelet.engine.schedule import cosine_lr, scaled_lr


def test_warmup_then_cosine():
    kw = dict(base_lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert cosine_lr(0, **kw) == 0.0 and cosine_lr(5, **kw) == 0.5
    assert cosine_lr(10, **kw) == 1.0
    assert math.isclose(cosine_lr(60, **kw), 0.55)
    assert math.isclose(cosine_lr(110, **kw), 0.1)


def test_blr_scaling_rule():
    assert scaled_lr(lr=None, blr=1.5e-4, total_batch_size=512) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="exactly one"):
        scaled_lr(lr=1e-3, blr=1e-4, total_batch_size=8)


class Tiny(nn.Module):
    num_layers = 3

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.block = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)

    def no_weight_decay(self):
        return {"pos_embed"}

    def get_layer_id(self, name):
        return 0 if name == "pos_embed" else 1 if name.startswith("block") else 2


def test_no_decay_on_bias_norm_and_pos_embed_and_layer_decay_scales():
    m = Tiny()
    groups = param_groups(m, weight_decay=0.05, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(m.block.weight)]["weight_decay"] == 0.05
    for p in (m.block.bias, m.norm.weight, m.pos_embed):
        assert by_param[id(p)]["weight_decay"] == 0.0
    assert by_param[id(m.head.weight)]["lr_scale"] == 1.0
    assert by_param[id(m.block.weight)]["lr_scale"] == 0.5
    assert by_param[id(m.pos_embed)]["lr_scale"] == 0.25
