"""Activation checkpointing gives the gradients of the plain model (and, for ResNet3D, the same
BatchNorm statistics); channels-last-3d gives the same outputs in the other layout."""
from __future__ import annotations

import pytest
import torch

from tubelet.engine.switches import set_grad_checkpointing, use_channels_last
from tubelet.models.classifier import VideoClassifier
from tubelet.models.mae import MaskedAutoencoder
from tubelet.models.resnet3d import ResNet3D
from tubelet.models.vit import VisionTransformer
from tubelet.registry import ConfigError

VIDEO = dict(img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
             num_heads=2)


def grads(model: torch.nn.Module, x: torch.Tensor, *, checkpointing: bool, **kw) -> dict:
    model.zero_grad(set_to_none=True)
    set_grad_checkpointing(model, checkpointing)
    torch.manual_seed(1)  # drop path draws: non-reentrant checkpointing replays them
    out = model(x, **kw)
    out = out["pred"] if isinstance(out, dict) else out
    out.square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(model: torch.nn.Module, x: torch.Tensor, **kw) -> None:
    plain = grads(model, x, checkpointing=False, **kw)
    ckpt = grads(model, x, checkpointing=True, **kw)
    assert plain.keys() == ckpt.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-6, atol=1e-7, msg=name)


def test_vit_and_video_vit_with_drop_path():
    torch.manual_seed(0)
    assert_same_grads(VisionTransformer(**VIDEO, drop_path_rate=0.2, num_classes=3),
                      torch.randn(2, 3, 4, 16, 16))
    assert_same_grads(VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2,
                                        num_heads=2, num_classes=3), torch.randn(2, 3, 16, 16))


def test_mae_encoder_and_decoder():
    torch.manual_seed(0)
    model = MaskedAutoencoder(**VIDEO, decoder_embed_dim=16, decoder_depth=2,
                              decoder_num_heads=2, mask_ratio=0.5)
    mask = model.draw_mask(2, torch.device("cpu"))
    assert_same_grads(model, torch.randn(2, 3, 4, 16, 16), mask=mask)
    assert model.encoder.grad_checkpointing  # set_grad_checkpointing reached the encoder


def test_resnet3d_stages_and_batchnorm_statistics_move_once():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 32, 32)
    states = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = ResNet3D(block="basic", layers=(1, 1, 1, 1), base_width=8, num_classes=3)
        for m in model.modules():  # non-zero last BN weights: every branch carries gradient
            if isinstance(m, torch.nn.BatchNorm3d):
                torch.nn.init.normal_(m.weight)
        g = grads(model, x, checkpointing=checkpointing)
        states.append((g, {k: v.clone() for k, v in model.state_dict().items()}))
    (g0, s0), (g1, s1) = states
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6, msg=name)
    assert s0.keys() == s1.keys()
    for k in s0:  # running mean/var and num_batches_tracked: updated once, as without
        assert torch.equal(s0[k], s1[k]), k


def test_video_classifier_passes_it_to_the_backbone():
    model = VideoClassifier(backbone={"type": "resnet3d", "block": "basic", "layers": [1, 1, 1, 1],
                                      "base_width": 8, "num_classes": 0},
                            head={"type": "linear", "num_classes": 3})
    set_grad_checkpointing(model)
    assert model.backbone.grad_checkpointing and model.channels_last_3d

    class NoSwitch(torch.nn.Module):
        pass
    with pytest.raises(ConfigError, match="model.grad_checkpointing: NoSwitch has no"):
        set_grad_checkpointing(NoSwitch())


def test_channels_last_keeps_values_and_names():
    torch.manual_seed(0)
    model = ResNet3D(block="basic", layers=(1, 1, 1, 1), base_width=8, num_classes=3).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    plain = model(x)
    names = list(model.state_dict())
    use_channels_last(model)
    conv = model.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    torch.testing.assert_close(model(x), plain, rtol=1e-4, atol=1e-5)
    assert list(model.state_dict()) == names
