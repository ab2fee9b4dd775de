"""The synthetic action dataset (tubelet.data.synth), read as HMDB51. It is generated only where
asked: at the quickstart's root `data/synth_actions`, or anywhere with `generate: true`, so a
mistyped root is a missing directory rather than a new dataset trained on in silence."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.hmdb51 import HMDB51
from tubelet.data.synth import ensure_synthetic_dataset
from tubelet.registry import DATASETS, ConfigError

DEFAULT_ROOT = "data/synth_actions"  # the quickstart's root, relative to the working directory


def generates(root: str, generate: bool | None) -> bool:
    """Whether a missing `root` is written rather than an error: `generate: true`, or the
    default (None) at DEFAULT_ROOT. `generate: false` never writes."""
    if generate is None:
        return Path(root).absolute() == Path(DEFAULT_ROOT).absolute()
    return generate


@DATASETS.register("synthetic_actions")
class SyntheticActions(HMDB51):
    """Motion-only action classes as real MP4s under `root`; `video_frames`, `size`, `fps` and
    `data_seed` shape the generated files, the other keys the sampled clips (as hmdb51).
    `generate`: write the files when `root` has none (default: only at `data/synth_actions`);
    an existing root made with other parameters is always an error.
    Do not use `random_horizontal_flip` with it: a flip turns move_left into move_right."""

    def __init__(self, root: str = DEFAULT_ROOT, *, subset: str = "train",
                 generate: bool | None = None, num_classes: int = 8,
                 num_train_per_class: int = 80, num_test_per_class: int = 20,
                 video_frames: int = 16, size: int = 40, fps: int = 8, data_seed: int = 0,
                 num_frames: int = 8, stride: int = 2, sampling: str = "interval",
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav",
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        if generate not in (None, True, False):
            raise ConfigError(f"generate: expected true or false, got {generate!r}")
        if not generates(root, generate) and not (Path(root) / "synth.json").is_file():
            how = ("generate: false" if generate is False else
                   f"one is written only at {DEFAULT_ROOT} or with generate: true")
            raise ConfigError(f"root: no synthetic dataset at {str(root)!r} ({how})")
        # an existing root is only compared with these parameters, never rewritten
        ensure_synthetic_dataset(root, num_classes=num_classes,
                                 num_train_per_class=num_train_per_class,
                                 num_test_per_class=num_test_per_class, num_frames=video_frames,
                                 size=size, fps=fps, seed=data_seed)
        super().__init__(root, split=1, subset=subset, num_frames=num_frames, stride=stride,
                         sampling=sampling, temporal_views=temporal_views,
                         spatial_crops=spatial_crops, repeat=repeat, seed=seed, backend=backend,
                         transform=transform, to_float=to_float)
