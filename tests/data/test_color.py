"""The colour transforms (tubelet/data/color.py): hand-computed pixels, one draw per clip, the
per-sample generator as the only source of randomness, p=0 and eval as the identity, and every
bad argument refused under its key."""
from __future__ import annotations

import pytest
import torch

from tubelet.data.color import (ColorJitter, GaussianBlur, RandomGrayscale, RandomSolarize,
                                adjust_hue, blur, hsv_to_rgb, rgb_to_hsv)
from tubelet.data.seeding import sample_generator
from tubelet.data.transforms import Compose, Normalize
from tubelet.registry import TRANSFORMS, ConfigError, build


def pixel(rgb, frames: int = 1) -> torch.Tensor:
    """A uint8 (3, T, 1, 1) clip of one pixel colour."""
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1, 1).repeat(1, frames, 1, 1)


def gen(index: int = 0) -> torch.Generator:
    return sample_generator(0, 0, index)


def clip(seed: int = 0, frames: int = 4, size: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, frames, size, size), generator=g, dtype=torch.uint8)


ALL = [ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), RandomGrayscale(p=0.5),
       GaussianBlur(sigma=[0.1, 2.0], p=0.5), RandomSolarize(threshold=0.5, p=0.5)]


def test_grayscale_of_known_pixels_is_the_601_luma():
    gray = RandomGrayscale(p=1.0)
    # 0.299*255 = 76.245; 0.299*10 + 0.587*20 + 0.114*30 = 18.15; white stays white
    for rgb, y in [((255, 0, 0), 76), ((0, 255, 0), 150), ((0, 0, 255), 29),
                   ((10, 20, 30), 18), ((255, 255, 255), 255)]:
        out = gray(pixel(rgb), generator=gen())
        assert out.dtype == torch.uint8 and out.flatten().tolist() == [y, y, y], rgb
    out = gray(pixel((255, 0, 0)).float() / 255, generator=gen())  # float in, float out
    assert out.dtype == torch.float32 and torch.allclose(out.flatten(), torch.full((3,), 0.299))


def test_hue_rotation_by_a_third_turns_red_green_and_green_blue():
    shift = ColorJitter(hue=[1 / 3, 1 / 3], p=1.0)  # a fixed shift of a third of the circle
    assert shift(pixel((255, 0, 0)), generator=gen()).flatten().tolist() == [0, 255, 0]
    assert shift(pixel((0, 255, 0)), generator=gen()).flatten().tolist() == [0, 0, 255]
    back = ColorJitter(hue=[-1 / 3, -1 / 3], p=1.0)
    assert back(pixel((255, 0, 0)), generator=gen()).flatten().tolist() == [0, 0, 255]
    # a half turn of orange (255, 128, 0): hue 30 deg -> 210 deg, (0, 127, 255)
    assert adjust_hue(pixel((255, 128, 0)).float() / 255, 0.5).mul(255).round().flatten() \
        .tolist() == [0, 127, 255]
    # grey has no hue: unchanged
    assert shift(pixel((90, 90, 90)), generator=gen()).flatten().tolist() == [90, 90, 90]


def test_hsv_round_trip_and_known_values():
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(hsv_to_rgb(*rgb_to_hsv(x)), x, atol=1e-6)
    h, s, v = rgb_to_hsv(torch.tensor([0.5, 1.0, 0.5]).view(3, 1))  # light green: 120 deg
    assert torch.allclose(torch.stack([h, s, v]).flatten(), torch.tensor([1 / 3, 0.5, 1.0]))


def test_brightness_contrast_saturation_factors():
    px = pixel((100, 50, 200))
    assert ColorJitter(brightness=[1.2, 1.2])(px, generator=gen()).flatten().tolist() == \
        [120, 60, 240]
    assert ColorJitter(brightness=[2.0, 2.0])(px, generator=gen()).flatten().tolist() == \
        [200, 100, 255]  # clamped at white
    # saturation 0 is the grey image: luma(100, 50, 200) = 29.9 + 29.35 + 22.8 = 82.05
    assert ColorJitter(saturation=[0.0, 0.0])(px, generator=gen()).flatten().tolist() == [82] * 3
    # contrast 0.5 blends with the clip's mean luma: two pixels of luma 0 and 255, mean 127.5
    two = torch.tensor([[0, 255]] * 3, dtype=torch.uint8).view(3, 1, 1, 2)
    assert ColorJitter(contrast=[0.5, 0.5])(two, generator=gen()).flatten().tolist() == \
        [64, 191] * 3  # 127.5 -+ 63.75 rounds half to even: 63.75 -> 64, 191.25 -> 191


def test_solarize_inverts_at_and_above_the_threshold():
    sol = RandomSolarize(threshold=0.5, p=1.0)  # PIL's 128 on uint8
    x = torch.tensor([0, 127, 128, 200, 255], dtype=torch.uint8).view(1, 1, 1, 5)
    assert sol(x, generator=gen()).flatten().tolist() == [0, 127, 127, 55, 0]
    xf = torch.tensor([0.2, 0.5, 0.9]).view(1, 1, 1, 3)
    assert torch.allclose(sol(xf, generator=gen()).flatten(), torch.tensor([0.2, 0.5, 0.1]))
    assert RandomSolarize(threshold=0.0, p=1.0)(x, generator=gen()).flatten().tolist() == \
        [255, 128, 127, 55, 0]


def test_blur_keeps_a_constant_and_the_mean_and_spreads_a_dot():
    flat = torch.full((3, 2, 9, 9), 0.4)
    assert torch.allclose(blur(flat, 1.5), flat)
    dot = torch.zeros(1, 1, 9, 9)
    dot[..., 4, 4] = 1.0
    out = blur(dot, 1.0)
    assert torch.isclose(out.sum(), torch.tensor(1.0)) and out[..., 4, 4] < 0.2
    assert torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.transpose(-1, -2))
    # a 1-D Gaussian of sigma 1 at 0 and 1, normalized over radius 3: 0.3990 and 0.2420
    assert torch.allclose(out[0, 0, 4, 4:6], torch.tensor([0.3990 ** 2, 0.3990 * 0.2420]),
                          atol=2e-3)


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_one_draw_per_clip_every_frame_alike(t):
    """A clip of T copies of a frame comes out as T equal frames, for many draws: a per-frame
    draw would make them differ."""
    frame = clip(3, frames=1)
    video = frame.repeat(1, 6, 1, 1)
    changed = 0
    for index in range(16):
        out = t(video, generator=gen(index))
        assert all(torch.equal(out[:, k], out[:, 0]) for k in range(6))
        # and frame 0 is what the same draw does to the one frame alone
        assert torch.equal(out[:, :1], t(frame, generator=gen(index)))
        changed += not torch.equal(out, video)
    assert changed > 0  # it did something


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_same_seed_same_output_and_a_fixed_number_of_draws(t):
    video = clip(4)
    outs = [t(video, generator=gen(i)) for i in range(8)]
    assert all(torch.equal(o, t(video, generator=gen(i))) for i, o in enumerate(outs))
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # other samples, other draws
    # the draws after this transform do not depend on whether it applied
    after = []
    for i in range(8):
        g = gen(i)
        t(video, generator=g)
        after.append(float(torch.rand((1,), generator=g)))
    zero = type(t)(**{**vars_of(t), "p": 0.0})
    for i in range(8):
        g = gen(i)
        zero(video, generator=g)
        assert float(torch.rand((1,), generator=g)) == after[i]


def vars_of(t) -> dict:
    if isinstance(t, ColorJitter):
        return dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    if isinstance(t, GaussianBlur):
        return dict(sigma=list(t.sigma))
    if isinstance(t, RandomSolarize):
        return dict(threshold=t.threshold)
    return {}


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_p_zero_and_eval_are_the_identity(t):
    video = clip(5)
    zero = type(t)(**{**vars_of(t), "p": 0.0})
    for i in range(8):
        assert torch.equal(zero(video, generator=gen(i)), video)
    assert torch.equal(t(video, generator=None), video)


def test_float_and_uint8_agree_and_normalized_clips_are_refused():
    video = clip(6)
    for t in ALL:
        for i in range(4):
            a = t(video, generator=gen(i))
            b = t(video.float() / 255, generator=gen(i))
            assert b.dtype == torch.float32
            assert (a.float() - b * 255).abs().max() <= 0.5 + 1e-3
    normalized = Normalize([0.45] * 3, [0.225] * 3)(video, generator=None)
    for t in ALL:
        with pytest.raises(ValueError, match="before normalize"):
            type(t)(**{**vars_of(t), "p": 1.0})(normalized, generator=gen())


def test_in_a_pipeline_before_normalize():
    pipeline = Compose([build({"type": "color_jitter", "brightness": 0.4, "contrast": 0.4,
                               "saturation": 0.2, "hue": 0.1, "p": 0.8}, TRANSFORMS),
                        build({"type": "random_grayscale", "p": 0.2}, TRANSFORMS),
                        build({"type": "gaussian_blur", "sigma": [0.1, 2.0], "p": 1.0},
                              TRANSFORMS),
                        build({"type": "random_solarize", "p": 0.2}, TRANSFORMS),
                        Normalize([0.45] * 3, [0.225] * 3)])
    out = pipeline(clip(7), generator=gen())
    assert out.shape == (3, 4, 12, 12) and out.dtype == torch.float32
    assert torch.equal(out, pipeline(clip(7), generator=gen()))


@pytest.mark.parametrize("node, key", [
    ({"type": "color_jitter", "brightness": -0.1}, "brightness"),
    ({"type": "color_jitter", "contrast": [1.2, 0.8]}, "contrast"),
    ({"type": "color_jitter", "saturation": [0.5]}, "saturation"),
    ({"type": "color_jitter", "hue": 0.6}, "hue"),
    ({"type": "color_jitter", "hue": -0.1}, "hue"),
    ({"type": "color_jitter", "hue": [-0.6, 0.1]}, "hue"),
    ({"type": "color_jitter", "p": 1.5}, "p"),
    ({"type": "random_grayscale", "p": -0.1}, "p"),
    ({"type": "gaussian_blur", "sigma": 0}, "sigma"),
    ({"type": "gaussian_blur", "sigma": [2.0, 0.1]}, "sigma"),
    ({"type": "gaussian_blur", "sigma": [0.1, 1, 2]}, "sigma"),
    ({"type": "gaussian_blur", "p": 2}, "p"),
    ({"type": "random_solarize", "threshold": 1.5}, "threshold"),
    ({"type": "random_solarize", "p": -1}, "p"),
])
def test_bad_arguments_are_config_errors_naming_the_key(node, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        build(node, TRANSFORMS)
