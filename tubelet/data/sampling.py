"""Frame-index samplers: which frames of a video make up one clip."""
from __future__ import annotations

import torch


def interval_indices(num_video_frames: int, *, num_frames: int, stride: int,
                     generator: torch.Generator | None) -> list[int]:
    """`num_frames` indices `stride` apart: a random start when `generator` is given, the
    centred clip when it is None (eval). A video shorter than the clip span repeats its last
    frame rather than failing, since short clips are common in real datasets."""
    if num_video_frames < 1:
        raise ValueError(f"interval_indices: num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"interval_indices: num_frames and stride must be >= 1, "
                         f"got {num_frames} and {stride}")
    span = (num_frames - 1) * stride + 1
    max_start = max(num_video_frames - span, 0)
    if generator is None:
        start = max_start // 2
    else:
        start = int(torch.randint(0, max_start + 1, (1,), generator=generator))
    last = num_video_frames - 1
    return [min(start + i * stride, last) for i in range(num_frames)]
