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


from tubelet.data.sampling import clip_indices, segment_indices  # noqa: E402


def test_segment_sampling_one_frame_per_segment():
    assert segment_indices(80, num_frames=8, generator=None) == [5, 15, 25, 35, 45, 55, 65, 75]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        picked = segment_indices(80, num_frames=8, generator=g)
        assert [i // 10 for i in picked] == list(range(8))
    assert segment_indices(3, num_frames=6, generator=None) == [0, 0, 1, 1, 2, 2]  # short video


def test_multiview_temporal_starts_span_the_video():
    starts = [interval_indices(100, num_frames=4, stride=5, generator=None, view=v,
                               num_views=3)[0] for v in range(3)]
    assert starts == [0, 42, 84]  # max start 100 - 16 = 84
    first = [segment_indices(80, num_frames=4, generator=None, view=v, num_views=2)[0]
             for v in range(2)]
    assert first == [5, 15]


def test_target_fps_resamples_the_timeline():
    # 30 fps source, clip at 15 fps stride 1: every other source frame, centred
    indices = clip_indices(60, fps=30.0, sampling="interval", num_frames=4, stride=1,
                           target_fps=15.0, generator=None)
    assert indices == [26, 28, 30, 32]
    # upsampling repeats frames
    assert clip_indices(4, fps=10.0, sampling="interval", num_frames=8, stride=1,
                        target_fps=20.0, generator=None) == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="sampling"):
        clip_indices(10, fps=1.0, sampling="dense", num_frames=2, stride=1, target_fps=None,
                     generator=None)
