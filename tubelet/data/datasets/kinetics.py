"""Kinetics (400/600/700) as published: a CSV per subset with the header
`label,youtube_id,time_start,time_end,split` (extra columns such as `is_cc` are ignored) and
clips named `<youtube_id>_<start:06d>_<end:06d>.mp4`, found in ROOT/<label>/ (the crawler
layout) or directly in ROOT (the CVDF download layout). The official test CSVs of Kinetics-600
and -700 have no `label` column (`youtube_id,time_start,time_end,split`): such a CSV loads
unlabelled, for prediction, with its clips in ROOT; training and metrics refuse it."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import SampleTable, check_dir, check_file
from tubelet.data.datasets.video import VideoDataset, default_index_file
from tubelet.data.tables import at_line
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError

COLUMNS = ("youtube_id", "time_start", "time_end")


def clip_name(youtube_id: str, start: str, end: str, extension: str) -> str:
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}{extension}"


def read_csv(path: Path) -> tuple[list[tuple[dict[str, str], int]], bool]:
    """((row, line number) for each row, whether the CSV has a `label` column); checks the
    header and the numeric columns."""
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
            rows.append((row, lineno))
    return rows, not missing


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
        rows, labelled = read_csv(path)
        source = rows if classes_from is None else read_csv(Path(classes_from))[0]
        self.classes = sorted({r["label"] for r, _ in source if r.get("label")})
        if not self.classes and (labelled or classes_from is not None):
            raise ConfigError(f"classes_from: {classes_from or annotations} has no labels")
        self.num_classes = len(self.classes)  # 0 for an unlabelled CSV without classes_from
        lookup = {c: k for k, c in enumerate(self.classes)}
        table = []
        for row, lineno in rows:
            name = clip_name(row["youtube_id"], row["time_start"], row["time_end"], extension)
            if not labelled:
                table.append((self.root / name, None, at_line(path), lineno))
                continue
            label = row.get("label") or ""
            if label not in lookup:
                raise ConfigError(f"{path}:{lineno}: label {label!r} is not a class of "
                                  f"{classes_from or annotations}")
            nested = self.root / label / name
            table.append((nested if nested.exists() else self.root / name, lookup[label],
                          at_line(path), lineno))
        samples = SampleTable.build(table)
        self.setup_videos(samples, source=path, index_file=default_index_file(index_file, path),
                          num_frames=num_frames, stride=stride, sampling=sampling,
                          target_fps=target_fps, backend=backend)
