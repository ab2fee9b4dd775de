"""Videos with several labels each (Charades-, AVA-Kinetics-style actions), in two formats:

- `video_list_multilabel`: one "<path> <labels>" per line, `<labels>` comma-separated class
  ids without spaces ("v001.mp4 3,17,42"); "-" for a video with no positive label. As
  `video_list`, the path may contain spaces (the labels are the last field).
- `multilabel_csv`: a CSV with a header; `path_column` (default `path`) and `labels_column`
  (default `labels`) hold the path and the labels, separated by `;` ("3;17;42", empty for
  none). With `classes` (a text file, one class name per line, line k is class k) the labels
  are names, as Charades' "c092;c147"; without it, class ids.

The target is a float multi-hot vector `label` of `num_classes` (B, K) once batched, for the
`multilabel` task. Paths are relative to `root` (default: the annotation file's directory).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import SampleTable, check_file
from tubelet.data.datasets.video import VideoDataset, default_index_file
from tubelet.data.tables import at_line
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError, did_you_mean


def multi_hot(labels: list[str], *, num_classes: int, names: dict[str, int] | None,
              where: str) -> torch.Tensor:
    """Class ids (or names with `names`) -> a float (num_classes,) 0/1 vector."""
    target = torch.zeros(num_classes, dtype=torch.float32)
    for label in labels:
        if names is not None:
            if label not in names:
                raise ConfigError(f"{where}: unknown class {label!r}{did_you_mean(label, names)}")
            k = names[label]
        else:
            if not label.lstrip("-").isdigit():
                raise ConfigError(f"{where}: expected integer class ids, got {label!r}")
            k = int(label)
        if not 0 <= k < num_classes:
            raise ConfigError(f"{where}: label {k} out of range [0, {num_classes})")
        target[k] = 1.0
    return target


def read_multilabel_list(path: Path, *, root: Path, num_classes: int) -> SampleTable:
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise ConfigError(f"{where}: expected '<video path> <id>,<id>,...' (or '-' for no "
                              f"label), got {line.strip()!r}")
        labels = [] if fields[1] == "-" else fields[1].split(",")
        target = multi_hot(labels, num_classes=num_classes, names=None, where=where)
        rows.append((root / fields[0].strip(), target, at_line(path), lineno))
    return SampleTable.build(rows)


def read_class_names(path: Path) -> dict[str, int]:
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ConfigError(f"classes: {path} lists a class name twice")
    return {name: k for k, name in enumerate(names)}


def read_multilabel_csv(path: Path, *, root: Path, num_classes: int, path_column: str,
                        labels_column: str, names: dict[str, int] | None) -> SampleTable:
    rows = []
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in (path_column, labels_column):
            if column not in header:
                raise ConfigError(f"{path}:1: no column {column!r}{did_you_mean(column, header)}"
                                  f"; the header is {header}")
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            video, labels = row[path_column], row[labels_column]
            if not video or labels is None:
                raise ConfigError(f"{where}: a row needs {path_column!r} and {labels_column!r}")
            labels = [x.strip() for x in labels.split(";") if x.strip()]
            target = multi_hot(labels, num_classes=num_classes, names=names, where=where)
            rows.append((root / video, target, at_line(path), lineno))
    return SampleTable.build(rows)


class _MultiLabelVideos(VideoDataset):
    def _setup(self, samples: SampleTable, path: Path, *, num_classes: int,
               index_file: str | None, **clip: object) -> None:
        self.num_classes = num_classes
        self.classes = [str(k) for k in range(num_classes)]
        self.setup_videos(samples, source=path, index_file=default_index_file(index_file, path),
                          **clip)


def _check_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise ConfigError(f"num_classes: must be >= 1, got {num_classes}")


@DATASETS.register("video_list_multilabel")
class VideoListMultiLabel(_MultiLabelVideos):
    """The module docstring's list format. Clip options: see data/datasets/video.py."""

    def __init__(self, annotations: str, *, num_classes: int, root: str | None = None,
                 subset: str = "train", num_frames: int = 16, stride: int = 4,
                 sampling: str = "interval", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav", index_file: str | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        _check_classes(num_classes)
        path = self.open_annotations(annotations, subset=subset, seed=seed, transform=transform,
                                     temporal_views=temporal_views, spatial_crops=spatial_crops,
                                     repeat=repeat, to_float=to_float)
        samples = read_multilabel_list(path, root=Path(root) if root else path.parent,
                                       num_classes=num_classes)
        self._setup(samples, path, num_classes=num_classes, index_file=index_file,
                    num_frames=num_frames, stride=stride, sampling=sampling,
                    target_fps=target_fps, backend=backend)


@DATASETS.register("multilabel_csv")
class MultiLabelCSV(_MultiLabelVideos):
    """The module docstring's CSV format. Clip options: see data/datasets/video.py."""

    def __init__(self, annotations: str, *, num_classes: int, root: str | None = None,
                 classes: str | None = None, path_column: str = "path",
                 labels_column: str = "labels", subset: str = "train", num_frames: int = 16,
                 stride: int = 4, sampling: str = "interval", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav", index_file: str | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        _check_classes(num_classes)
        path = self.open_annotations(annotations, subset=subset, seed=seed, transform=transform,
                                     temporal_views=temporal_views, spatial_crops=spatial_crops,
                                     repeat=repeat, to_float=to_float)
        names = None
        if classes is not None:
            check_file("classes", Path(classes))
            names = read_class_names(Path(classes))
            if len(names) != num_classes:
                raise ConfigError(f"classes: {classes} names {len(names)} classes, "
                                  f"num_classes is {num_classes}")
        samples = read_multilabel_csv(path, root=Path(root) if root else path.parent,
                                      num_classes=num_classes, path_column=path_column,
                                      labels_column=labels_column, names=names)
        self._setup(samples, path, num_classes=num_classes, index_file=index_file,
                    num_frames=num_frames, stride=stride, sampling=sampling,
                    target_fps=target_fps, backend=backend)


@DATASETS.register("synthetic_multilabel")
class SyntheticMultiLabel(VideoListMultiLabel):
    """The `multilabel` synthetic layout (data/synth_multilabel.py: two motions per clip, two
    labels) read as `video_list_multilabel`; written at `root` on first use when `generate`
    is true (an existing root made with other parameters is an error). `num_classes` motion
    classes; `video_frames`, `size`, `fps`, `data_seed` shape the files, the rest the clips."""

    def __init__(self, root: str, *, subset: str = "train", generate: bool = False,
                 num_classes: int = 6, num_train_per_class: int = 8,
                 num_test_per_class: int = 4, video_frames: int = 16, size: int = 32,
                 fps: int = 8, data_seed: int = 0, num_frames: int = 8, stride: int = 2,
                 sampling: str = "interval", temporal_views: int = 1, spatial_crops: int = 1,
                 repeat: int = 1, seed: int = 0, backend: str = "pyav",
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        from tubelet.data.synth_layouts import ensure_layout
        if not generate and not (Path(root) / "synth.json").is_file():
            raise ConfigError(f"root: no synthetic multi-label set at {str(root)!r} (written "
                              "only with generate: true)")
        ensure_layout(root, layout="multilabel", num_classes=num_classes,
                      num_train_per_class=num_train_per_class,
                      num_test_per_class=num_test_per_class, num_frames=video_frames,
                      size=size, fps=fps, seed=data_seed)
        super().__init__(str(Path(root) / f"{subset}.txt"), num_classes=num_classes,
                         subset=subset, num_frames=num_frames, stride=stride,
                         sampling=sampling, temporal_views=temporal_views,
                         spatial_crops=spatial_crops, repeat=repeat, seed=seed,
                         backend=backend, transform=transform, to_float=to_float)
