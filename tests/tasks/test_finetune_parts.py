"""Finetuning and linear-probe parts: LARS, EMA (with resume), layer decay through a composed
model, the linear-probe freeze, ResNet3D."""
import pytest
import torch
from torch import nn

from tubelet.engine.ema import EMAHook
from tubelet.engine.optim import LARS, param_groups
from tubelet.models import VideoClassifier, create_model

VIT = dict(type="vit", img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
           num_heads=2, num_classes=0, global_pool="avg", class_token=False)


def test_lars_step_matches_the_trust_ratio_rule():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # |w| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 2.0]]), torch.tensor([0.5])
    opt = LARS([{"params": [w], "weight_decay": 0.5}, {"params": [b], "weight_decay": 0.0}],
               lr=0.1, momentum=0.9, trust_coefficient=0.001)
    opt.step()
    update = torch.tensor([[1.5, 4.0]])  # grad + wd * w
    expected = torch.tensor([[3.0, 4.0]]) - 0.1 * update * (0.001 * 5 / update.norm())
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(b.detach(), torch.tensor([0.95]))  # 1-D: plain SGD, no trust ratio


class _Trainer:
    def __init__(self, model):
        self.model = model


def test_ema_updates_and_restores_its_state():
    model = nn.Linear(2, 1)
    hook = EMAHook(decay=0.5)
    hook.before_train(_Trainer(model))
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    hook.after_step(_Trainer(model))
    torch.testing.assert_close(hook.shadow["weight"], start + 1.0)
    resumed = EMAHook(decay=0.5)
    resumed.load_state_dict(hook.state_dict())
    resumed.before_train(_Trainer(model))  # must not reset the restored average
    torch.testing.assert_close(resumed.shadow["weight"], start + 1.0)
    assert resumed.num_updates == 1


def test_video_classifier_layer_decay_and_linear_probe_freeze():
    torch.manual_seed(0)
    model = VideoClassifier(backbone=VIT, head={"type": "linear", "num_classes": 3})
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    scales = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scales[id(model.head.fc.weight)] == 1.0
    assert scales[id(model.backbone.patch_embed.proj.weight)] == 0.5 ** 3
    assert scales[id(model.backbone.blocks[1].mlp.fc1.weight)] == 0.5
    probe = VideoClassifier(backbone=VIT, head={"type": "linear_probe", "num_classes": 3},
                            freeze_backbone=True).train()
    groups = param_groups(probe, weight_decay=0.0)
    assert sum(len(g["params"]) for g in groups) == 2  # head weight and bias only
    assert not probe.backbone.training and probe.head.training
    assert probe(torch.randn(4, 3, 4, 16, 16)).shape == (4, 3)


def test_nested_node_errors_name_the_key():
    from tubelet.registry import ConfigError
    with pytest.raises(ConfigError, match="backbone.type: unknown model 'vit_smal"):
        VideoClassifier(backbone={"type": "vit_smal_patch16_224"}, head={"type": "linear", "num_classes": 2})
    with pytest.raises(ConfigError, match="head.num_clases: unknown key"):
        VideoClassifier(backbone=VIT, head={"type": "linear", "num_clases": 2})


def test_resnet3d_shapes_and_neck():
    torch.manual_seed(0)
    model = create_model("resnet3d_18", num_classes=5).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    assert model.forward_features(x).shape == (1, 512, 4, 1, 1)
    assert model(x).shape == (1, 5)
    composed = VideoClassifier(backbone={"type": "resnet3d_18", "num_classes": 0},
                               neck={"type": "global_avg_pool"},
                               head={"type": "linear", "num_classes": 5, "dropout": 0.5}).eval()
    assert composed(x).shape == (1, 5)
    with torch.device("meta"):
        assert sum(p.numel() for p in create_model("resnet3d_50", num_classes=51).parameters()) == 32_309_107
