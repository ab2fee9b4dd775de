import math

import numpy as np
import pytest
import torch

from tubelet.models.layers import (Attention, Block, DropPath, PatchEmbed, resize_pos_embed, sincos_1d,
                                   sincos_2d, sincos_3d)


def assert_allclose(actual: torch.Tensor, expected: torch.Tensor, *, tol: float = 1e-5,
                    msg: str = "") -> None:
    # not torch.testing.assert_close: its first call imports torch.distributed.tensor (~1.5 s)
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual, expected, rtol=tol, atol=tol), f"{msg} max abs diff {diff:.3g}"


def test_patch_embed_image_shape_and_conv2d():
    embed = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=24)
    assert isinstance(embed.proj, torch.nn.Conv2d)
    assert embed.grid_size == (4, 4) and embed.num_patches == 16
    assert embed(torch.randn(2, 3, 32, 32)).shape == (2, 16, 24)


def test_patch_embed_video_tokens_are_time_major_tubelets():
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=16, patch_size=8, in_chans=3, embed_dim=5, num_frames=4, tubelet_size=2)
    assert isinstance(embed.proj, torch.nn.Conv3d) and embed.proj.kernel_size == (2, 8, 8)
    x = torch.randn(2, 3, 4, 16, 16)  # (B,C,T,H,W)
    out = embed(x)
    assert out.shape == (2, 2 * 2 * 2, 5)
    # token n is tubelet (t, row, col) in row-major order: flatten each tubelet and apply the kernel
    tubelets = x.reshape(2, 3, 2, 2, 2, 8, 2, 8).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(2, 8, -1)
    expected = tubelets @ embed.proj.weight.reshape(5, -1).T + embed.proj.bias
    assert_allclose(out, expected)


def test_patch_embed_rejects_wrong_input_and_bad_sizes():
    image = PatchEmbed(img_size=32, patch_size=8, embed_dim=8)
    with pytest.raises(ValueError, match=r"\(B,C,H,W\)"):
        image(torch.randn(1, 3, 2, 32, 32))
    video = PatchEmbed(img_size=32, patch_size=8, embed_dim=8, num_frames=4, tubelet_size=2)
    with pytest.raises(ValueError, match=r"\(B,C,T,H,W\)"):
        video(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        PatchEmbed(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="tubelet_size"):
        PatchEmbed(num_frames=1, tubelet_size=2)


def _naive_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    B, N, D = x.shape
    bias = attn.qkv.bias
    if attn.q_bias is not None:
        bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    qkv = x @ attn.qkv.weight.T + (0 if bias is None else bias)
    q, k, v = qkv.reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, N, D))


@pytest.mark.parametrize("qkv_bias", [True, False, "qv"])
def test_sdpa_attention_matches_naive_softmax(qkv_bias):
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4, qkv_bias=qkv_bias).eval()
    for p in attn.parameters():  # random biases too, so the bias layout is really exercised
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 7, 16)
    assert_allclose(attn(x), _naive_attention(attn, x))


def test_attention_bias_layouts_have_timm_and_videomae_keys():
    assert set(Attention(8, num_heads=2, qkv_bias=True).state_dict()) == {
        "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    assert set(Attention(8, num_heads=2, qkv_bias=False).state_dict()) == {
        "qkv.weight", "proj.weight", "proj.bias"}
    assert set(Attention(8, num_heads=2, qkv_bias="qv").state_dict()) == {
        "qkv.weight", "q_bias", "v_bias", "proj.weight", "proj.bias"}
    with pytest.raises(ValueError, match="qkv_bias"):
        Attention(8, num_heads=2, qkv_bias="qkv")
    with pytest.raises(ValueError, match="num_heads"):
        Attention(10, num_heads=4)


def test_block_has_timm_key_names():
    keys = set(Block(8, num_heads=2, init_values=1e-5).state_dict())
    assert keys == {
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
        "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"}


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    layer = DropPath(0.25)
    x = torch.ones(4000, 3, 2)
    layer.eval()
    assert layer(x) is x
    layer.train()
    out = layer(x)
    per_sample = out.reshape(4000, -1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    assert abs(out.mean().item() - 1.0) < 0.05


def test_sincos_1d_is_videomae_table():
    num_positions, dim = 50, 12
    # the "Attention is all you need" formula as VideoMAE writes it, in numpy
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                       for pos in range(num_positions)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    assert_allclose(sincos_1d(num_positions, dim), torch.tensor(angles, dtype=torch.float32))


def _mae_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def test_sincos_2d_is_mae_table():
    rows, cols, dim = 3, 5, 16
    grid = np.stack(np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64)))
    expected = np.concatenate([_mae_1d(dim // 2, grid[0]), _mae_1d(dim // 2, grid[1])], axis=1)
    assert_allclose(sincos_2d((rows, cols), dim), torch.tensor(expected, dtype=torch.float32))


def test_sincos_3d_splits_time_and_space():
    table = sincos_3d((3, 2, 4), 32)
    assert table.shape == (3 * 2 * 4, 32)
    per_frame = table.reshape(3, 8, 32)
    assert torch.equal(per_frame[:, :1, :8].expand(-1, 8, -1), per_frame[:, :, :8])  # time part
    assert torch.equal(per_frame[:1, :, 8:].expand(3, -1, -1), per_frame[:, :, 8:])  # space part


def test_resize_pos_embed_keeps_prefix_and_constants():
    pos = torch.randn(1, 1 + 4 * 4, 8)
    assert resize_pos_embed(pos, old_grid=(4, 4), new_grid=(4, 4), num_prefix_tokens=1) is pos
    resized = resize_pos_embed(pos, old_grid=(4, 4), new_grid=(6, 5), num_prefix_tokens=1)
    assert resized.shape == (1, 1 + 30, 8) and torch.equal(resized[:, :1], pos[:, :1])
    # a table that is constant over the grid stays constant, in space and in time
    const = torch.arange(8.0).expand(1, 2 * 4 * 4, 8)
    out = resize_pos_embed(const, old_grid=(2, 4, 4), new_grid=(4, 7, 7))
    assert out.shape == (1, 4 * 7 * 7, 8)
    assert_allclose(out, torch.arange(8.0).expand(1, 4 * 7 * 7, 8))
