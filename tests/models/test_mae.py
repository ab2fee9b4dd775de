import pytest
import torch

from tubelet.models import MaskedAutoencoder, create_model
from tubelet.models.masking import gather_tubelets, patchify, random_mask, tube_mask
from tubelet.tasks.mae_pretrain import MAEPretrainTask, mae_targets

TINY_VIDEO = dict(img_size=16, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=32, depth=2,
                  num_heads=2, qkv_bias="qv", decoder_embed_dim=16, decoder_depth=1,
                  decoder_num_heads=2, mask_ratio=0.75)


def tiny(**kwargs) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(**{**TINY_VIDEO, **kwargs})


@pytest.mark.parametrize("name, expected", [
    ("pretrain_videomae_small_patch16_224", 24_029_376),
    ("pretrain_videomae_base_patch16_224", 94_210_944),
    ("pretrain_videomae_large_patch16_224", 317_782_016),
])
def test_param_count_matches_videomae_pretrain(name, expected):
    with torch.device("meta"):
        assert sum(p.numel() for p in create_model(name).parameters()) == expected


def test_videomae_pretrain_state_dict_keys():
    keys = set(tiny().state_dict())
    assert {"encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.q_bias", "encoder.norm.weight",
            "encoder_to_decoder.weight", "mask_token", "decoder.blocks.0.attn.v_bias",
            "decoder.norm.weight", "decoder.head.weight"} <= keys
    assert "encoder_to_decoder.bias" not in keys and not any("pos_embed" in k for k in keys)
    assert tiny().state_dict()["encoder.patch_embed.proj.weight"].shape == (32, 3, 2, 8, 8)


def test_masks_hide_a_fixed_count_and_tubes_span_time():
    torch.manual_seed(0)
    mask = random_mask(3, 10, mask_ratio=0.7)
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [7, 7, 7]
    tube = tube_mask(3, (4, 2, 3), mask_ratio=0.5).reshape(3, 4, 6)
    assert (tube == tube[:, :1]).all() and tube[:, 0].sum(1).tolist() == [3, 3, 3]
    torch.manual_seed(1)
    a = tube_mask(2, (2, 3, 3), mask_ratio=0.9)
    torch.manual_seed(1)
    assert torch.equal(a, tube_mask(2, (2, 3, 3), mask_ratio=0.9))  # from the global RNG


def test_forward_shapes_and_encoder_sees_only_visible_tokens():
    model = tiny().eval()
    video = torch.randn(2, 3, 4, 16, 16)
    out = model(video)
    assert out["mask"].shape == (2, 8) and out["mask"].sum().item() == 2 * 6  # 4 tubes, 3 hidden x 2
    assert out["pred"].shape == (2, 6, 2 * 8 * 8 * 3)
    mask = out["mask"]
    changed = video.clone()
    tokens_hidden = mask[0].reshape(2, 2, 2)  # (t, h, w)
    t, h, w = [int(i[0]) for i in tokens_hidden.nonzero(as_tuple=True)]
    changed[0, :, 2 * t:2 * t + 2, 8 * h:8 * h + 8, 8 * w:8 * w + 8] += 5.0  # a hidden tubelet
    torch.testing.assert_close(model.forward_encoder(video, mask), model.forward_encoder(changed, mask))


@pytest.mark.parametrize("video", [True, False])
def test_visible_only_embedding_equals_the_patch_conv(video):
    model = tiny() if video else tiny(num_frames=1, tubelet_size=1, mask_type="random")
    x = torch.randn(2, 3, 4, 16, 16) if video else torch.randn(2, 3, 16, 16)
    mask = model.draw_mask(2, "cpu")
    expected = model.encoder.patch_embed(x)[~mask].reshape(2, -1, 32)
    torch.testing.assert_close(model.embed_visible(x, mask), expected, atol=1e-5, rtol=1e-5)


def test_image_mae_with_class_token():
    torch.manual_seed(0)
    model = MaskedAutoencoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                              class_token=True, pos_embed="sincos2d", decoder_embed_dim=16,
                              decoder_depth=1, decoder_num_heads=2, decoder_bias=True)
    out = model(torch.randn(2, 3, 32, 32))
    assert out["pred"].shape == (2, 12, 8 * 8 * 3) and model.mask_type == "random"
    loss = MAEPretrainTask().loss(model, {"video": torch.randn(2, 3, 1, 32, 32)})  # image_folder's clips
    assert loss.ndim == 0
    assert {"encoder.pos_embed", "decoder.pos_embed", "encoder.cls_token"} <= set(model.state_dict())


def test_patchify_follows_tubelet_size():
    video = torch.arange(2 * 3 * 8 * 16 * 16, dtype=torch.float32).reshape(2, 3, 8, 16, 16)
    patches = patchify(video, patch_size=8, tubelet_size=4)  # (B, N, t*p*p, C)
    assert patches.shape == (2, 2 * 2 * 2, 4 * 8 * 8, 3)
    # token 3 = (t=0, h=1, w=1); its first pixel is frame 0, row 8, col 8, channels last
    assert torch.equal(patches[1, 3, 0], video[1, :, 0, 8, 8])
    assert torch.equal(patches[1, 7, -1], video[1, :, 7, 15, 15])


def test_gather_tubelets_picks_the_masked_tokens_in_the_conv_weight_order():
    video = torch.randn(2, 3, 4, 16, 16)
    torch.manual_seed(0)
    mask = random_mask(2, 8, mask_ratio=0.5)
    picked = gather_tubelets(video, mask, patch_size=8, tubelet_size=2)  # (B, M, C, t*p*p)
    patches = patchify(video, patch_size=8, tubelet_size=2)  # (B, N, t*p*p, C)
    assert torch.equal(picked, patches[mask].reshape(2, 4, 128, 3).transpose(-1, -2))
    image, mask = torch.randn(2, 3, 16, 16), random_mask(2, 4, mask_ratio=0.5)
    picked = gather_tubelets(image, mask, patch_size=8)  # (B, M, C, p*p)
    assert torch.equal(picked, patchify(image, patch_size=8)[mask].reshape(2, 2, 64, 3).transpose(-1, -2))


@pytest.mark.parametrize("per_channel", [True, False])
def test_targets_of_the_hidden_tokens_are_the_normalised_patches(per_channel):
    video = torch.randn(2, 3, 4, 16, 16) * 3.0 + 1.0
    torch.manual_seed(0)
    mask = tube_mask(2, (2, 2, 2), mask_ratio=0.5)
    kwargs = dict(patch_size=8, tubelet_size=2, per_channel=per_channel)
    patches = patchify(video, patch_size=8, tubelet_size=2)  # (B, N, t*p*p, C)
    dims = (-2,) if per_channel else (-2, -1)
    reference = (patches - patches.mean(dims, keepdim=True)) / (
        patches.var(dims, keepdim=True, unbiased=True) + 1.0e-6).sqrt()
    every = mae_targets(video, norm_pix_loss=True, **kwargs)
    torch.testing.assert_close(every, reference.flatten(2))
    hidden = mae_targets(video, norm_pix_loss=True, mask=mask, **kwargs)
    torch.testing.assert_close(hidden, every[mask].reshape(2, 4, -1))
    raw = mae_targets(video, norm_pix_loss=False, mask=mask, **kwargs)
    assert torch.equal(raw, patches.flatten(2)[mask].reshape(2, 4, -1))


def test_loss_is_masked_mse_on_normalised_patches():
    model = tiny(tubelet_size=4)  # a tubelet of 4 frames: the targets must follow it
    video = torch.randn(2, 3, 4, 16, 16)
    task = MAEPretrainTask(norm_pix_loss=True)
    torch.manual_seed(3)
    loss = task.loss(model, {"video": video})
    torch.manual_seed(3)
    out = model(video)
    target = mae_targets(video, patch_size=8, tubelet_size=4, norm_pix_loss=True, per_channel=True)
    assert target.shape == (2, 4, 4 * 8 * 8 * 3)
    per_channel = target[0, 0].reshape(4 * 64, 3)
    torch.testing.assert_close(per_channel.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    expected = ((out["pred"] - target[out["mask"]].reshape(2, -1, target.shape[-1])) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_eval_masks_do_not_touch_the_training_rng():
    model, task = tiny().eval(), MAEPretrainTask()
    batch = {"video": torch.randn(2, 3, 4, 16, 16)}
    torch.manual_seed(0)
    task.eval_step(model, batch)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))
    first = task.compute_metrics()["loss"]
    task.reset_metrics()
    task.eval_step(model, batch)
    assert task.compute_metrics()["loss"] == first
