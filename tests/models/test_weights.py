"""Interop: checkpoints saved in each foreign layout load with a clean report and give the same
outputs; position embeddings resize; a mismatch no rule covers is a clear error."""
import argparse

import pytest
import torch

from tubelet.models import MaskedAutoencoder, VideoClassifier, VisionTransformer
from tubelet.models.weights import export_safetensors, load_pretrained
from tubelet.registry import ConfigError

VIT = dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
VIDEOMAE_FT = dict(VIT, num_frames=4, tubelet_size=2, global_pool="avg", class_token=False,
                   pos_embed="sincos", qkv_bias="qv", init_values=0.1)
VIDEOMAE_PT = dict(img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                   num_heads=2, qkv_bias="qv", init_values=0.1, decoder_embed_dim=16,
                   decoder_depth=1, decoder_num_heads=2)
MAE_PT = dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, class_token=True,
              pos_embed="sincos2d", decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
              decoder_bias=True)


def seeded(cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = cls(**kwargs)
    with torch.no_grad():  # non-zero biases and heads, so a wrong mapping shows in the outputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def videomae_names(state):
    """Our names -> VideoMAE's (`gamma_1`/`gamma_2` for layer scale)."""
    return {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in state.items()}


def mae_names(state):
    """Our MAE names -> facebookresearch/mae's."""
    out = {}
    for k, v in state.items():
        for ours, theirs in (("encoder_to_decoder.", "decoder_embed."), ("decoder.blocks.", "decoder_blocks."),
                             ("decoder.norm.", "decoder_norm."), ("decoder.head.", "decoder_pred."),
                             ("decoder.pos_embed", "decoder_pos_embed"), ("encoder.", "")):
            if k.startswith(ours):
                k = theirs + k[len(ours):]
                break
        out[k] = v
    return out


def assert_clean(report, *, loaded=None):
    assert report.clean, str(report)
    if loaded is not None:
        assert len(report.loaded) == loaded, str(report)


def test_videomae_finetune_checkpoint(tmp_path):
    src = seeded(VisionTransformer, **VIDEOMAE_FT)
    torch.save({"module": videomae_names(src.state_dict())}, tmp_path / "ft.pth")
    dst = VisionTransformer(**VIDEOMAE_FT).eval()
    report = load_pretrained(dst, tmp_path / "ft.pth")
    assert_clean(report, loaded=len(src.state_dict()))
    x = torch.randn(2, 3, 4, 16, 16)
    torch.testing.assert_close(dst(x), src(x))


def test_videomae_pretrain_checkpoint_into_mae_and_into_finetune(tmp_path):
    src = seeded(MaskedAutoencoder, **VIDEOMAE_PT)
    torch.save({"model": videomae_names({f"module.{k}": v for k, v in src.state_dict().items()})},
               tmp_path / "pt.pth")
    dst = MaskedAutoencoder(**VIDEOMAE_PT).eval()
    assert_clean(load_pretrained(dst, tmp_path / "pt.pth"), loaded=len(src.state_dict()))
    x, mask = torch.randn(2, 3, 4, 16, 16), torch.tensor([[1, 0, 1, 1] * 2, [0, 1, 1, 1] * 2]).bool()
    torch.testing.assert_close(dst(x, mask)["pred"], src(x, mask)["pred"])

    ft = VisionTransformer(**VIDEOMAE_FT).eval()
    report = load_pretrained(ft, tmp_path / "pt.pth")
    assert_clean(report)
    assert any(r.startswith("head.weight") for r in report.reset)
    assert any(r.startswith("fc_norm.weight") for r in report.reset)
    assert any(k.startswith("mask_token") for k in report.skipped)
    tokens = ft.blocks[-1](ft.blocks[0](ft.patch_embed(x) + ft.pos_embed))
    torch.testing.assert_close(tokens, src.encoder.blocks[-1](src.encoder.blocks[0](
        src.encoder.patch_embed(x) + src.encoder.pos_embed)))


def test_mae_checkpoint_with_args_into_mae_and_into_timm_vit(tmp_path):
    src = seeded(MaskedAutoencoder, **MAE_PT)
    torch.save({"model": mae_names(src.state_dict()), "args": argparse.Namespace(lr=1.0)},
               tmp_path / "mae.pth")
    dst = MaskedAutoencoder(**MAE_PT).eval()
    assert_clean(load_pretrained(dst, tmp_path / "mae.pth"), loaded=len(src.state_dict()))
    x = torch.randn(2, 3, 16, 16)
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0]]).bool()
    torch.testing.assert_close(dst(x, mask)["pred"], src(x, mask)["pred"])
    vit = VisionTransformer(**VIT).eval()  # timm ViT, learned pos_embed, cls token
    report = load_pretrained(vit, tmp_path / "mae.pth")
    assert_clean(report)
    torch.testing.assert_close(vit.pos_embed, src.encoder.pos_embed)


def test_timm_checkpoint_into_videomae_qv_layout_and_back(tmp_path):
    src = seeded(VisionTransformer, **{**VIT, "global_pool": "avg"})
    torch.save(src.state_dict(), tmp_path / "timm.pth")
    dst = VisionTransformer(**{**VIT, "global_pool": "avg", "qkv_bias": "qv"}).eval()
    report = load_pretrained(dst, tmp_path / "timm.pth")
    assert_clean(report)
    assert any("split into q_bias, v_bias" in r for r in report.resized)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(dst(x), src(x), atol=1e-5, rtol=1e-5)  # the k bias is a no-op


def test_ours_from_a_run_directory_and_safetensors(tmp_path):
    src = seeded(VisionTransformer, **VIT)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": src.state_dict(), "trainer": {"step": 3}}, tmp_path / "run/checkpoints/last.pt")
    dst = VisionTransformer(**VIT).eval()
    assert_clean(load_pretrained(dst, tmp_path / "run"), loaded=len(src.state_dict()))
    out = export_safetensors(tmp_path / "run", tmp_path / "w.safetensors")
    again = VisionTransformer(**VIT).eval()
    assert_clean(load_pretrained(again, out))
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(again(x), src(x))
    with pytest.raises(ConfigError, match="no checkpoints/last.pt"):
        load_pretrained(dst, tmp_path)
    from tubelet.cli import main  # the same export from the command line
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "cli.safetensors")]) == 0
    assert_clean(load_pretrained(VisionTransformer(**VIT), tmp_path / "cli.safetensors"))


def test_into_a_video_classifier_backbone(tmp_path):
    src = seeded(MaskedAutoencoder, **VIDEOMAE_PT)
    torch.save({"model": src.state_dict()}, tmp_path / "pt.pth")
    backbone = {k: v for k, v in VIDEOMAE_FT.items() if k != "num_classes"}
    model = VideoClassifier(backbone={"type": "vit", **backbone, "num_classes": 0, "fc_norm": False},
                            head={"type": "linear_probe", "num_classes": 3}, freeze_backbone=True)
    report = load_pretrained(model, tmp_path / "pt.pth")
    assert_clean(report)
    assert "backbone.norm.weight" in report.loaded
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.fc.weight", "head.fc.bias"]


def test_pos_embed_resize_8_to_16_frames_and_224_to_160_pixels(tmp_path):
    common = dict(patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=0, tubelet_size=2,
                  class_token=False, global_pool="avg")
    src = seeded(VisionTransformer, img_size=224, num_frames=8, **common)
    with torch.no_grad():  # a table that varies linearly in time and is constant in space
        src.pos_embed.copy_(torch.arange(4.0).repeat_interleave(196)[None, :, None].expand(1, -1, 16))
    torch.save(src.state_dict(), tmp_path / "src.pth")
    dst = VisionTransformer(img_size=160, num_frames=16, **common)
    report = load_pretrained(dst, tmp_path / "src.pth")
    assert_clean(report)
    assert report.resized == ["pos_embed: grid (4, 14, 14) -> (8, 10, 10)"]
    table = dst.pos_embed.reshape(8, 100, 16)
    torch.testing.assert_close(table[:, 0, 0], torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]))
    torch.testing.assert_close(table, table[:, :1].expand(-1, 100, -1))  # space stays constant
    # images: bicubic 14x14 -> 10x10 keeps the class token row
    img = seeded(VisionTransformer, img_size=224, patch_size=16, embed_dim=16, depth=1, num_heads=2)
    torch.save(img.state_dict(), tmp_path / "img.pth")
    small = VisionTransformer(img_size=160, patch_size=16, embed_dim=16, depth=1, num_heads=2)
    report = load_pretrained(small, tmp_path / "img.pth")
    assert report.resized == ["pos_embed: grid (14, 14) -> (10, 10)"] and report.clean
    torch.testing.assert_close(small.pos_embed[:, 0], img.pos_embed[:, 0])


def test_image_patch_embedding_inflates_to_a_tubelet(tmp_path):
    src = seeded(VisionTransformer, **VIT)
    torch.save({"model": src.state_dict()}, tmp_path / "img.pth")
    video_model = VisionTransformer(**{**VIT, "num_frames": 4, "tubelet_size": 2})
    report = load_pretrained(video_model, tmp_path / "img.pth")
    assert any("inflated" in r for r in report.resized) and report.clean
    frame = torch.randn(1, 3, 16, 16)
    static = frame[:, :, None].expand(-1, -1, 4, -1, -1)  # a still video
    torch.testing.assert_close(video_model.patch_embed(static)[:, :4], src.patch_embed(frame))


def test_tubelet_length_changes_keep_a_still_videos_embedding(tmp_path):
    two = seeded(VisionTransformer, **{**VIT, "num_frames": 4, "tubelet_size": 2})
    torch.save(two.state_dict(), tmp_path / "t2.pth")
    one = VisionTransformer(**{**VIT, "num_frames": 3, "tubelet_size": 1})  # e.g. Gaze360's odd clips
    report = load_pretrained(one, tmp_path / "t2.pth")
    assert report.clean and any("tubelet of 2 -> 1 frames" in r for r in report.resized)
    frame = torch.randn(1, 3, 1, 16, 16)
    torch.testing.assert_close(one.patch_embed(frame.expand(-1, -1, 3, -1, -1))[:, :4],
                               two.patch_embed(frame.expand(-1, -1, 4, -1, -1))[:, :4])


def test_head_reset_when_class_count_differs(tmp_path):
    src = seeded(VisionTransformer, **VIT)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = VisionTransformer(**{**VIT, "num_classes": 3})
    before = dst.head.weight.clone()
    report = load_pretrained(dst, tmp_path / "w.pth")
    assert report.clean and [r.split(":")[0] for r in report.reset] == ["head.weight", "head.bias"]
    assert torch.equal(dst.head.weight, before)


def test_mismatch_no_rule_covers_is_a_clear_error(tmp_path):
    torch.save(seeded(VisionTransformer, **VIT).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match=r"blocks\.0\.mlp\.fc1\.weight has shape \(128, 32\) in the "
                                          r"checkpoint but \(64, 32\) in the model"):
        load_pretrained(VisionTransformer(**{**VIT, "mlp_ratio": 2.0}), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="not found"):
        load_pretrained(VisionTransformer(**VIT), tmp_path / "nope.pth")
