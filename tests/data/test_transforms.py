import pytest
import torch

from tubelet.data.transforms import (CenterCrop, Compose, Normalize, RandomCrop,
                                     RandomHorizontalFlip)
from tubelet.registry import TRANSFORMS, build


def _clip(num_frames: int = 4, height: int = 12, width: int = 10) -> torch.Tensor:
    """uint8 (C, T, H, W) where each pixel holds its (h, w) position, identical in every frame."""
    position = torch.arange(height * width).view(height, width) % 256
    return position.to(torch.uint8).expand(3, num_frames, height, width).contiguous()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_names_build_from_nodes():
    names = {"random_crop", "center_crop", "normalize", "random_horizontal_flip"}
    assert names <= set(TRANSFORMS.names())
    crop = build({"type": "random_crop", "size": [6, 4]}, TRANSFORMS)
    assert crop(_clip(), generator=_gen(0)).shape == (3, 4, 6, 4)


def test_random_crop_same_seed_same_output_and_same_for_all_frames():
    video = _clip()
    crop = RandomCrop(6)
    out = crop(video, generator=_gen(3))
    assert out.shape == (3, 4, 6, 6)
    assert torch.equal(out, crop(video, generator=_gen(3)))
    assert all(torch.equal(out[:, t], out[:, 0]) for t in range(4))
    # the crop is a contiguous window of the frame
    top, left = divmod(int(out[0, 0, 0, 0]), 10)
    assert torch.equal(out, video[..., top:top + 6, left:left + 6])


def test_random_crop_varies_with_seed_and_covers_the_frame():
    video = _clip()
    corners = {int(RandomCrop(6)(video, generator=_gen(seed))[0, 0, 0, 0]) for seed in range(200)}
    # 7 x 5 possible top-left corners
    assert corners == {top * 10 + left for top in range(7) for left in range(5)}


def test_random_crop_without_generator_is_centre_crop():
    video = _clip()
    assert torch.equal(RandomCrop([6, 4])(video, generator=None),
                       CenterCrop([6, 4])(video, generator=_gen(0)))
    assert torch.equal(CenterCrop(6)(video, generator=None), video[..., 3:9, 2:8])


def test_crop_larger_than_clip_raises():
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(11)(_clip(), generator=_gen(0))
    with pytest.raises(ValueError, match="larger"):
        CenterCrop([13, 2])(_clip(), generator=None)


def test_normalize_uint8_and_float():
    norm = Normalize(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    video = torch.full((3, 2, 2, 2), 255, dtype=torch.uint8)
    out = norm(video, generator=None)
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    assert torch.allclose(norm(video.float() / 255, generator=None), out)


def test_normalize_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Normalize(mean=[0.5], std=[0.5])
    with pytest.raises(ValueError):
        Normalize(mean=[0, 0, 0], std=[1, 0, 1])
    with pytest.raises(ValueError, match="3 channels"):
        Normalize(mean=[0, 0, 0], std=[1, 1, 1])(torch.zeros(2, 3, 4, 4), generator=None)


def test_flip():
    video = _clip()
    assert torch.equal(RandomHorizontalFlip(p=1.0)(video, generator=_gen(0)), video.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(video, generator=_gen(0)), video)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(video, generator=None), video)
    flips = [not torch.equal(RandomHorizontalFlip()(video, generator=_gen(seed)), video)
             for seed in range(100)]
    assert 20 < sum(flips) < 80
    with pytest.raises(ValueError):
        RandomHorizontalFlip(p=1.5)


def test_compose_threads_one_generator_through_all_transforms():
    video = _clip()
    pipeline = Compose([RandomCrop(6), RandomHorizontalFlip(), Normalize([0.5] * 3, [0.5] * 3)])
    out = pipeline(video, generator=_gen(11))
    assert torch.equal(out, pipeline(video, generator=_gen(11)))
    generator = _gen(11)
    manual = RandomCrop(6)(video, generator=generator)
    manual = RandomHorizontalFlip()(manual, generator=generator)
    assert torch.equal(out, Normalize([0.5] * 3, [0.5] * 3)(manual, generator=generator))
    eval_out = pipeline(video, generator=None)
    assert torch.equal(eval_out, pipeline(video, generator=None))
    assert eval_out.shape == (3, 4, 6, 6)


from tubelet.data.randaugment import OPS, RandAugment  # noqa: E402
from tubelet.data.transforms import (RandomErasing, RandomResizedCrop, Resize,  # noqa: E402
                                     ShortSideResize, resize, spatial_crop)


def _noise_clip(t=4, h=32, w=48, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, t, h, w), generator=g, dtype=torch.uint8)


def test_resize_in_uint8_matches_float_resize():
    video = _noise_clip()
    out = resize(video, 16, 24)
    assert out.dtype == torch.uint8 and out.shape == (3, 4, 16, 24)
    ref = torch.nn.functional.interpolate(video.transpose(0, 1).float(), size=(16, 24),
                                          mode="bilinear", antialias=True).transpose(0, 1)
    assert (out.float() - ref).abs().max() <= 1.0
    assert ShortSideResize(16)(video, generator=None).shape == (3, 4, 16, 24)
    assert Resize([10, 12])(video, generator=None).shape == (3, 4, 10, 12)


def test_random_resized_crop_is_seeded_same_for_all_frames_and_centred_in_eval():
    video = _clip(num_frames=3, height=40, width=40).clone()
    rrc = RandomResizedCrop(16, scale=(0.2, 0.6))
    a, b = rrc(video, generator=_gen(5)), rrc(video, generator=_gen(5))
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    assert torch.equal(a[:, 0], a[:, 2])
    assert not torch.equal(a, rrc(video, generator=_gen(6)))
    top, left, h, w = rrc.box(40, 40, None)
    assert (top, left, h, w) == (0, 0, 40, 40)


@pytest.mark.parametrize("op", OPS)
def test_rand_augment_each_op_is_the_same_on_every_frame(op):
    frame = _noise_clip(t=1)
    video = frame.expand(3, 5, 32, 48).contiguous()  # 5 identical frames
    ra = RandAugment(num_ops=2, magnitude=9, p=1.0, ops=[op])
    out = ra(video, generator=_gen(1))
    assert out.dtype == torch.uint8 and out.shape == video.shape
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(5))
    if op not in ("identity",):
        assert not torch.equal(out, video) or op == "auto_contrast"
    assert torch.equal(out, ra(video, generator=_gen(1)))
    assert torch.equal(ra(video, generator=None), video)


def test_rand_augment_float_input_and_unknown_op():
    video = _noise_clip().float() / 255
    out = RandAugment(p=1.0)(video, generator=_gen(2))
    assert out.dtype == torch.float32 and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match="unknown ops"):
        RandAugment(ops=["equalise"])


def test_random_erasing_one_box_through_time_seeded():
    video = torch.zeros(3, 4, 32, 32)
    erase = RandomErasing(p=1.0)
    out = erase(video, generator=_gen(0))
    changed = out != 0  # (C,T,H,W)
    assert changed.any() and torch.equal(changed[:, 0], changed[:, 3])
    assert torch.equal(out, erase(video, generator=_gen(0)))
    assert torch.equal(erase(video, generator=None), video)
    with pytest.raises(ValueError, match="after normalize"):
        erase(video.to(torch.uint8), generator=_gen(0))


def test_spatial_crops_left_centre_right():
    video = _clip(num_frames=1, height=10, width=16)
    crops = [spatial_crop(video, index=k, num_crops=3) for k in range(3)]
    assert [tuple(c.shape[-2:]) for c in crops] == [(10, 10)] * 3
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 3, 6]
