"""HMDB51: videos in ROOT/<videos_dir>/<class>/<name>, official splits in
ROOT/<splits_dir>/<class>_test_split<k>.txt, one "<name> <id>" per line
(id 1 = train, 2 = test, 0 = unused in this split)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import SampleTable, check_dir
from tubelet.data.datasets.video import VideoDataset, default_index_file
from tubelet.data.tables import at_line
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError

SUBSET_IDS = {"train": "1", "test": "2"}


def read_split_file(path: Path, *, class_dir: Path, subset_id: str,
                    label: int) -> list[tuple[Path, int, str, int]]:
    """The samples of the lines with `subset_id`; every line is checked, whatever its subset,
    so a broken file fails on the first run rather than the test run."""
    samples = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ConfigError(f"{path}:{lineno}: expected '<video> <0|1|2>', got {line.strip()!r}")
        if fields[1] == subset_id:
            samples.append((class_dir / fields[0], label, at_line(path), lineno))
    return samples


@DATASETS.register("hmdb51")
class HMDB51(VideoDataset):
    """One HMDB51 split (`split` 1-3, `subset` train or test); classes are the split files'
    names in sorted order. Clip options: see data/datasets/video.py."""

    def __init__(self, root: str, *, split: int = 1, subset: str = "train", num_frames: int = 8,
                 stride: int = 2, sampling: str = "interval", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav", index_file: str | None = None,
                 videos_dir: str = "videos", splits_dir: str = "splits",
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        super().__init__(subset=subset, seed=seed, transform=transform,
                         temporal_views=temporal_views, spatial_crops=spatial_crops,
                         repeat=repeat, to_float=to_float)
        self.root, self.subset = Path(root), subset
        check_dir("root", self.root)
        check_dir("splits_dir", self.root / splits_dir)
        check_dir("videos_dir", self.root / videos_dir)
        suffix = f"_test_split{split}.txt"
        split_files = sorted((self.root / splits_dir).glob(f"*{suffix}"))
        if not split_files:
            raise ConfigError(f"split: no '*{suffix}' files in {str(self.root / splits_dir)!r}")
        self.classes = [f.name[:-len(suffix)] for f in split_files]
        self.num_classes = len(self.classes)
        samples = []
        for label, (name, split_file) in enumerate(zip(self.classes, split_files)):
            samples += read_split_file(split_file, class_dir=self.root / videos_dir / name,
                                       subset_id=SUBSET_IDS[subset], label=label)
        index = default_index_file(index_file, self.root / splits_dir)
        self.setup_videos(SampleTable.build(samples), source=self.root / splits_dir,
                          index_file=index, num_frames=num_frames, stride=stride,
                          sampling=sampling, target_fps=target_fps, backend=backend)
