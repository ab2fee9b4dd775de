"""The synthetic action dataset (tubelet.data.synth), generated on first use and read as HMDB51."""
from __future__ import annotations

from typing import Callable

import torch

from tubelet.data.datasets.hmdb51 import HMDB51
from tubelet.data.synth import ensure_synthetic_dataset
from tubelet.registry import DATASETS


@DATASETS.register("synthetic_actions")
class SyntheticActions(HMDB51):
    """Motion-only action classes as real MP4s under `root`; `video_frames`, `size`, `fps` and
    `data_seed` shape the generated files, the other keys the sampled clips (as hmdb51).
    Do not use `random_horizontal_flip` with it: a flip turns move_left into move_right."""

    def __init__(self, root: str, *, subset: str = "train", num_classes: int = 8,
                 num_train_per_class: int = 40, num_test_per_class: int = 10,
                 video_frames: int = 16, size: int = 40, fps: int = 8, data_seed: int = 0,
                 num_frames: int = 8, stride: int = 2, sampling: str = "interval",
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav",
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        ensure_synthetic_dataset(root, num_classes=num_classes,
                                 num_train_per_class=num_train_per_class,
                                 num_test_per_class=num_test_per_class, num_frames=video_frames,
                                 size=size, fps=fps, seed=data_seed)
        super().__init__(root, split=1, subset=subset, num_frames=num_frames, stride=stride,
                         sampling=sampling, temporal_views=temporal_views,
                         spatial_crops=spatial_crops, repeat=repeat, seed=seed, backend=backend,
                         transform=transform, to_float=to_float)
