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
