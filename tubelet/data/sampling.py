"""Frame-index samplers: which frames of a video make up one clip.

All take the video's frame count (from the metadata index, never from the file) and return a
list of frame indices. Training draws from the per-sample `generator`; `generator=None` is the
deterministic test choice. `view`/`num_views` pick one of several evenly spaced test clips.
"""
from __future__ import annotations

import torch

SAMPLINGS = ("interval", "segment")


def _check(num_video_frames: int, num_frames: int, stride: int = 1) -> None:
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames} and {stride}")


def interval_indices(num_video_frames: int, *, num_frames: int, stride: int,
                     generator: torch.Generator | None, view: int = 0,
                     num_views: int = 1) -> list[int]:
    """`num_frames` indices `stride` apart (dense sampling): a random start when `generator` is
    given; otherwise the centred clip, or with `num_views` > 1 the `view`-th of `num_views`
    starts spread evenly from the first to the last possible one. A video shorter than the
    clip span repeats its last frame rather than failing, since short clips are common."""
    _check(num_video_frames, num_frames, stride)
    span = (num_frames - 1) * stride + 1
    max_start = max(num_video_frames - span, 0)
    if generator is not None:
        start = int(torch.randint(0, max_start + 1, (1,), generator=generator))
    elif num_views > 1:
        start = round(max_start * view / (num_views - 1))
    else:
        start = max_start // 2
    last = num_video_frames - 1
    return [min(start + i * stride, last) for i in range(num_frames)]


def segment_indices(num_video_frames: int, *, num_frames: int,
                    generator: torch.Generator | None, view: int = 0,
                    num_views: int = 1) -> list[int]:
    """TSN-style uniform sampling: split the video into `num_frames` equal segments and take one
    frame from each: a random one in training, the middle one in test (shifted by
    `view / num_views` of a segment for multi-view test)."""
    _check(num_video_frames, num_frames)
    seg = num_video_frames / num_frames
    if generator is not None:
        offsets = torch.rand(num_frames, generator=generator).tolist()
    else:
        offset = (view + 0.5) / num_views
        offsets = [offset] * num_frames
    return [min(int(seg * (i + o)), num_video_frames - 1) for i, o in enumerate(offsets)]


def clip_indices(num_video_frames: int, *, fps: float, sampling: str, num_frames: int,
                 stride: int, target_fps: float | None, generator: torch.Generator | None,
                 view: int = 0, num_views: int = 1) -> list[int]:
    """Dispatch to a sampler; with `target_fps`, sample on a timeline resampled to that rate
    (so `stride` counts target-rate frames) and map back to the nearest source frame."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {sampling!r}")
    scale = 1.0 if not target_fps else fps / target_fps  # source frames per target frame
    virtual = max(1, int(num_video_frames / scale))
    if sampling == "segment":
        picked = segment_indices(virtual, num_frames=num_frames, generator=generator,
                                 view=view, num_views=num_views)
    else:
        picked = interval_indices(virtual, num_frames=num_frames, stride=stride,
                                  generator=generator, view=view, num_views=num_views)
    if scale == 1.0:
        return picked
    # Frame i of the resampled timeline shows the source frame on screen at its time.
    return [min(int(i * scale + 1e-6), num_video_frames - 1) for i in picked]
