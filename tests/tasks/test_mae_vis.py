"""Reconstruction pictures: a perfect prediction of the task's targets must give back the
original pixels exactly, for every target definition, images and videos alike."""
from __future__ import annotations

import pytest
import torch

from tubelet.tasks.mae_pretrain import mae_targets
from tubelet.tasks.mae_vis import grid_image, picture, reconstruct, to_pixels

MEAN, STD = torch.tensor([0.45, 0.4, 0.5]), torch.tensor([0.225, 0.2, 0.25])


@pytest.mark.parametrize("norm_pix, stats", [("videomae", True), ("mae", False), ("mae", True),
                                             ("none", False), ("none", True)])
@pytest.mark.parametrize("shape, tubelet", [((2, 3, 4, 16, 16), 2), ((2, 3, 16, 16), 1)])
def test_perfect_prediction_gives_back_the_original(norm_pix, stats, shape, tubelet):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(shape, generator=g)
    video = (pixels - MEAN.view(-1, *[1] * (len(shape) - 2))) / STD.view(-1, *[1] * (len(shape) - 2))
    num_tokens = (shape[2] // tubelet if len(shape) == 5 else 1) * 4
    mask = torch.zeros(2, num_tokens, dtype=torch.bool)
    mask[:, torch.randperm(num_tokens, generator=g)[:num_tokens // 2 + 1]] = True
    extra = dict(pixel_mean=MEAN, pixel_std=STD) if stats else {}
    pred = mae_targets(video, patch_size=8, tubelet_size=tubelet, norm_pix=norm_pix, mask=mask,
                       **extra)  # what a perfect decoder outputs
    original, masked, recon = reconstruct(video, pred, mask, patch_size=8, tubelet_size=tubelet,
                                          norm_pix=norm_pix, **extra)
    expected = pixels if stats else video  # the targets' base space
    if expected.ndim == 4:
        expected = expected.unsqueeze(2)
    torch.testing.assert_close(original, expected)
    torch.testing.assert_close(recon, expected, atol=1e-5, rtol=1e-5)
    # the masked input: hidden tokens without a value (shown black), visible ones the original's
    assert masked.isnan().all(dim=1).float().mean() == mask.float().mean()
    torch.testing.assert_close(masked[~masked.isnan()], expected[~masked.isnan()])
    # a wrong prediction changes only the hidden tokens
    _, _, wrong = reconstruct(video, pred + 1, mask, patch_size=8, tubelet_size=tubelet,
                              norm_pix=norm_pix, **extra)
    changed = (wrong != recon).any(dim=1).float().mean()
    assert abs(changed - mask.float().mean()) < 0.02


def test_picture_layout():
    clip = torch.rand(3, 4, 16, 16)
    frames = to_pixels(clip)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype.name == "uint8"
    image = grid_image([frames] * 3)  # 16 px frames enlarged 6x to 96, 2 px gaps
    assert image.shape == (3 * 96 + 2 * 2, 4 * 96 + 3 * 2, 3)
    # normalised clips are stretched to the original's range: its extremes become 0 and 255
    stretched = picture([clip * 4 - 2] * 3, pixels=False)
    assert stretched.min() == 0 and stretched.max() == 255
    hidden = clip.clone()
    hidden[:, 0] = float("nan")  # a hidden token of the masked input: black
    assert (to_pixels(hidden, mean=[0.5] * 3, std=[0.2] * 3)[0] == 0).all()
