"""Exact frames: the decoder returns exactly the frames asked for, across seeks, keyframe
intervals 250 and 16, B-frames, any order, repeats, and the skipped non-reference frames."""
import numpy as np
import pytest
import torch

from data.index_video import coded_ids
from tubelet.data.decode import backend_available, decode_frames
from tubelet.data.sampling import clip_indices

# Optional backends are always listed, so a machine without them reports visible skips.
BACKENDS = ["pyav", "decord", "torchcodec"]


def _cases() -> list[list[int]]:
    rng = np.random.default_rng(0)
    cases = [[0], [299], [298, 299], [15, 16, 17], [249, 250, 251], [0, 299], [16] * 3,
             [250, 5, 120, 5]]
    for _ in range(5):  # 16-frame stride-4 clips at random starts
        start = int(rng.integers(0, 300 - 61))
        cases.append([start + 4 * k for k in range(16)])
    for _ in range(3):  # scattered, unsorted
        cases.append(rng.integers(0, 300, int(rng.integers(1, 9))).tolist())
    return cases


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gop", [250, 16])
def test_frames_returned_are_exactly_the_indices_asked_for(coded_videos, gop, backend):
    if not backend_available(backend):
        pytest.skip(f"optional decoder {backend!r} is not installed")
    for indices in _cases():
        video = decode_frames(coded_videos[gop], indices, backend=backend)
        assert video.dtype == torch.uint8 and video.shape == (len(indices), 64, 64, 3)
        assert coded_ids(video) == indices, (gop, indices)


def test_resampled_and_segment_clips_decode_exactly(coded_videos):
    g = torch.Generator().manual_seed(0)
    for sampling, target_fps in [("interval", None), ("interval", 15.0), ("segment", None)]:
        indices = clip_indices(300, fps=30.0, sampling=sampling, num_frames=8, stride=2,
                               target_fps=target_fps, generator=g)
        assert coded_ids(decode_frames(coded_videos[16], indices)) == indices
