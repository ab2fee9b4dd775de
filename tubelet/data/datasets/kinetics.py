"""Kinetics (400/600/700) as published: a CSV per subset with the header
`label,youtube_id,time_start,time_end,split` (the test CSV has no label column; extra columns
such as `is_cc` are ignored) and clips named `<youtube_id>_<start:06d>_<end:06d>.mp4`, found in
ROOT/<label>/ (the crawler layout) or directly in ROOT (the CVDF download layout)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import Sample, check_dir, check_file
from tubelet.data.datasets.video import VideoDataset, default_index_file
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError

COLUMNS = ("youtube_id", "time_start", "time_end")


def clip_name(youtube_id: str, start: str, end: str, extension: str) -> str:
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}{extension}"


def read_csv(path: Path) -> list[tuple[dict[str, str], str]]:
    """(row, "file:line") for each row; checks the header and the numeric columns."""
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (*COLUMNS, "label") if c not in (reader.fieldnames or [])]
        if missing and missing != ["label"]:
            raise ConfigError(f"{path}:1: missing column(s) {missing}; expected a header "
                              f"'label,youtube_id,time_start,time_end,split'")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            try:
                float(row["time_start"]), float(row["time_end"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: time_start/time_end must be numbers, got "
                                  f"{row.get('time_start')!r}, {row.get('time_end')!r}") from None
            rows.append((row, where))
    return rows


@DATASETS.register("kinetics")
class Kinetics(VideoDataset):
    """Kinetics clips listed in `annotations` (a CSV). Classes are the sorted labels of
    `classes_from` (default: `annotations`; point it at the train CSV when the list is a
    subset). `subset` train draws random clips. Clip options: see data/datasets/video.py."""

    def __init__(self, annotations: str, *, root: str, subset: str = "train",
                 classes_from: str | None = None, extension: str = ".mp4",
                 num_frames: int = 16, stride: int = 4, sampling: str = "interval",
                 target_fps: float | None = None, temporal_views: int = 1,
                 spatial_crops: int = 1, repeat: int = 1, seed: int = 0, backend: str = "pyav",
                 index_file: str | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        super().__init__(subset=subset, seed=seed, transform=transform,
                         temporal_views=temporal_views, spatial_crops=spatial_crops,
                         repeat=repeat, to_float=to_float)
        path, self.root = Path(annotations), Path(root)
        check_file("annotations", path)
        check_dir("root", self.root)
        rows = read_csv(path)
        source = rows if classes_from is None else read_csv(Path(classes_from))
        self.classes = sorted({r["label"] for r, _ in source if r.get("label")})
        if not self.classes:
            raise ConfigError(f"classes_from: {classes_from or annotations} has no labels")
        self.num_classes = len(self.classes)
        lookup = {c: k for k, c in enumerate(self.classes)}
        samples = []
        for row, where in rows:
            label = row.get("label") or ""
            if label not in lookup:
                raise ConfigError(f"{where}: label {label!r} is not a class of "
                                  f"{classes_from or annotations}")
            name = clip_name(row["youtube_id"], row["time_start"], row["time_end"], extension)
            nested = self.root / label / name
            samples.append(Sample(nested if nested.exists() else self.root / name,
                                  lookup[label], where))
        self.setup_videos(samples, index_file=default_index_file(index_file, path),
                          num_frames=num_frames, stride=stride, sampling=sampling,
                          target_fps=target_fps, backend=backend)
