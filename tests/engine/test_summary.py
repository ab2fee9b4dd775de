"""The model summary: parameter counts and torch-counted FLOPs, checked against published
numbers on the meta device (no memory, no weights)."""
from __future__ import annotations

import torch

from tubelet import build
from tubelet.build import num_test_views
from tubelet.engine.summary import count_parameters, describe, model_summary
from tubelet.registry import MODELS


def _videomae_vit_base() -> torch.nn.Module:
    build._register_builtins(None)
    with torch.device("meta"):  # VideoMAE's finetuning model: configs/videomae/finetune_vit_base_k400.yaml
        return MODELS.get("vit_base_patch16_224")(
            num_frames=16, tubelet_size=2, num_classes=400, global_pool="avg", class_token=False,
            pos_embed="sincos", qkv_bias="qv")


def test_videomae_vit_base_matches_the_paper():
    model = _videomae_vit_base()
    s = model_summary(model, input_shape=(8, 3, 16, 224, 224), views=5 * 3,
                      meta_model=lambda: model)
    # VideoMAE ViT-B/16, 16x224, K400 head: 86,534,800 parameters (86.5M in the paper)
    assert s["parameters"] == {"total": 86_534_800, "trainable": 86_534_800, "frozen": 0}
    # VideoMAE (Tong et al. 2022) Table: 180 GFLOPs/view, counting a multiply-add as one FLOP.
    # Without the attention matmuls (SDPA) the count would be ~135 G: attention is counted.
    assert abs(s["gmacs"] - 180) / 180 < 0.01, s["gmacs"]
    assert s["gflops"] == 2 * s["gmacs"]  # torch counts 2 per multiply-add
    assert s["input_shape"] == [1, 3, 16, 224, 224]  # counted per clip
    assert s["gflops_x_views"] == 15 * s["gflops"]
    assert "86,534,800 parameters" in describe(s)


def test_frozen_and_shared_parameters():
    lin = torch.nn.Linear(3, 4)
    model = torch.nn.Sequential(lin, torch.nn.Linear(4, 2), lin)  # `lin` shared: counted once
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == {"total": 16 + 10, "trainable": 16 + 2, "frozen": 8}


def test_views_from_test_else_val():
    assert num_test_views({"val": {"temporal_views": 5, "spatial_crops": 3}}) == 15
    assert num_test_views({"val": {"temporal_views": 2},
                           "test": {"temporal_views": 4, "spatial_crops": 3}}) == 12
    assert num_test_views({}) == 1


def test_mae_is_counted_on_real_tensors_without_touching_the_rng():
    """MAE's masking is data-dependent, so the meta forward fails; the real model is counted
    with a batch of one and the random stream is left as it was."""
    build._register_builtins(None)
    spec = dict(img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=1,
                num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    model = MODELS.get("mae")(**spec)
    with torch.device("meta"):
        meta = MODELS.get("mae")(**spec)
    state = torch.get_rng_state()
    s = model_summary(model, input_shape=(2, 3, 4, 16, 16), meta_model=lambda: meta)
    assert torch.equal(torch.get_rng_state(), state)
    assert s["gflops"] > 0 and s["parameters"]["total"] == sum(p.numel() for p in model.parameters())
