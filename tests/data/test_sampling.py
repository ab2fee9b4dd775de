import pytest
import torch

from tubelet.data.sampling import interval_indices


def test_centred_clip_without_generator():
    # span 15 in 100 frames: starts run 0..85, the centre is 42
    assert interval_indices(100, num_frames=8, stride=2, generator=None) == list(range(42, 57, 2))


def test_random_clip_is_in_range_and_strided():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        indices = interval_indices(40, num_frames=8, stride=3, generator=generator)
        assert len(indices) == 8 and 0 <= indices[0] and indices[-1] <= 39
        assert all(b - a == 3 for a, b in zip(indices, indices[1:]))


def test_random_starts_cover_every_position():
    generator = torch.Generator().manual_seed(0)
    starts = {interval_indices(20, num_frames=8, stride=2, generator=generator)[0]
              for _ in range(300)}
    assert starts == set(range(6))


def test_same_seed_same_clip():
    clips = [interval_indices(1000, num_frames=4, stride=4,
                              generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert clips[0] == clips[1]


def test_short_video_repeats_last_frame():
    assert interval_indices(5, num_frames=8, stride=2, generator=None) == [0, 2, 4, 4, 4, 4, 4, 4]
    generator = torch.Generator().manual_seed(0)
    assert interval_indices(1, num_frames=3, stride=2, generator=generator) == [0, 0, 0]


def test_exact_fit_has_one_start():
    generator = torch.Generator().manual_seed(0)
    indices = interval_indices(15, num_frames=8, stride=2, generator=generator)
    assert indices == list(range(0, 15, 2))


@pytest.mark.parametrize("args", [(0, 8, 2), (10, 0, 2), (10, 8, 0)])
def test_invalid_arguments(args):
    num_video_frames, num_frames, stride = args
    with pytest.raises(ValueError):
        interval_indices(num_video_frames, num_frames=num_frames, stride=stride, generator=None)
