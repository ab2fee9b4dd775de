"""A generic list of videos: one "<path> <label>" per line (space or tab separated; the path
may contain spaces, the label is the last field), or one "<path>" per line for an unlabelled
list (prediction only: training and metrics refuse it). Paths are relative to `root` (default:
the list file's directory). The first line decides which kind a list is; a list that mixes
them is refused, naming the line."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import SampleTable
from tubelet.data.datasets.video import VideoDataset, default_index_file, label_in_range
from tubelet.data.tables import at_line
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError


def _has_label(line: str) -> bool:
    fields = line.rsplit(maxsplit=1)
    return len(fields) == 2 and fields[1].lstrip("-").isdigit()


def read_video_list(path: Path, *, root: Path, num_classes: int | None) -> SampleTable:
    rows: list[tuple[Path, int | None, str, int]] = []
    labelled: bool | None = None
    first = 0
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if labelled is None:
            labelled, first = _has_label(line), lineno
        if labelled:
            fields = line.rsplit(maxsplit=1)
            if not _has_label(line):
                raise ConfigError(f"{where}: expected '<video path> <integer label>' as on line "
                                  f"{first}, got {line.strip()!r}")
            label = label_in_range(int(fields[1]), num_classes, where)
            rows.append((root / fields[0].strip(), label, at_line(path), lineno))
        elif _has_label(line):
            raise ConfigError(f"{where}: a label, but line {first} has none; expected "
                              f"'<video path>' only (an unlabelled list), got {line.strip()!r}")
        else:
            rows.append((root / line.strip(), None, at_line(path), lineno))
    return SampleTable.build(rows)


@DATASETS.register("video_list")
class VideoList(VideoDataset):
    """Videos from a list file; `subset` is "train" (random clips, augmentation) or "test".
    With `num_classes`, labels must lie in [0, num_classes); otherwise num_classes is
    1 + the largest label. Clip options: see data/datasets/video.py."""

    def __init__(self, annotations: str, *, root: str | None = None, subset: str = "train",
                 num_classes: int | None = None, num_frames: int = 16, stride: int = 4,
                 sampling: str = "interval", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav", index_file: str | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        path = self.open_annotations(annotations, subset=subset, seed=seed, transform=transform,
                                     temporal_views=temporal_views, spatial_crops=spatial_crops,
                                     repeat=repeat, to_float=to_float)
        samples = read_video_list(path, root=Path(root) if root else path.parent,
                                  num_classes=num_classes)
        labels = samples.targets
        largest = int(labels.max()) if labels is not None and len(labels) else -1
        self.num_classes = num_classes or 1 + largest
        self.classes = [str(k) for k in range(self.num_classes)]
        self.setup_videos(samples, source=path, index_file=default_index_file(index_file, path),
                          num_frames=num_frames, stride=stride, sampling=sampling,
                          target_fps=target_fps, backend=backend)
