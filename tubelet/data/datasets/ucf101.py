"""UCF101: videos in ROOT/<videos_dir>/<Class>/v_<Class>_gXX_cXX.avi and the official lists in
ROOT/<splits_dir>: classInd.txt ("<1-based id> <Class>"), trainlist0<k>.txt
("<Class>/<file>.avi <1-based id>") and testlist0<k>.txt ("<Class>/<file>.avi"; the class is
the folder)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import SampleTable, check_dir, check_file
from tubelet.data.datasets.video import VideoDataset, default_index_file
from tubelet.data.tables import at_line
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError, did_you_mean

LIST_NAMES = {"train": "trainlist0{}.txt", "test": "testlist0{}.txt"}


def read_class_index(path: Path) -> list[str]:
    classes = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) != len(classes) + 1:
            raise ConfigError(f"{path}:{lineno}: expected '{len(classes) + 1} <ClassName>', "
                              f"got {line.strip()!r}")
        classes.append(fields[1])
    return classes


def read_list(path: Path, *, videos: Path, classes: list[str]) -> SampleTable:
    lookup = {c.lower(): k for k, c in enumerate(classes)}  # the official lists mix case
    samples = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where, fields = f"{path}:{lineno}", line.split()
        name = fields[0].split("/")[0].lower()
        if len(fields) not in (1, 2) or "/" not in fields[0] or name not in lookup:
            hint = did_you_mean(name, lookup) if "/" in fields[0] else ""
            raise ConfigError(f"{where}: expected '<Class>/<video> [<class id>]' with a class "
                              f"from classInd.txt, got {line.strip()!r}{hint}")
        label = lookup[name]
        if len(fields) == 2 and fields[1] != str(label + 1):
            raise ConfigError(f"{where}: class id {fields[1]} does not match folder "
                              f"{fields[0].split('/')[0]!r} (id {label + 1} in classInd.txt)")
        samples.append((videos / fields[0], label, at_line(path), lineno))
    return SampleTable.build(samples)


@DATASETS.register("ucf101")
class UCF101(VideoDataset):
    """One UCF101 split (`split` 1-3, `subset` train or test); labels are classInd ids - 1.
    Clip options: see data/datasets/video.py."""

    def __init__(self, root: str, *, split: int = 1, subset: str = "train", num_frames: int = 16,
                 stride: int = 4, sampling: str = "interval", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav", index_file: str | None = None,
                 videos_dir: str = "UCF-101", splits_dir: str = "ucfTrainTestlist",
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        super().__init__(subset=subset, seed=seed, transform=transform,
                         temporal_views=temporal_views, spatial_crops=spatial_crops,
                         repeat=repeat, to_float=to_float)
        self.root = Path(root)
        check_dir("root", self.root)
        check_dir("videos_dir", self.root / videos_dir)
        splits = self.root / splits_dir
        check_file("splits_dir", splits / "classInd.txt")
        list_file = splits / LIST_NAMES[subset].format(split)
        check_file("split", list_file)
        self.classes = read_class_index(splits / "classInd.txt")
        self.num_classes = len(self.classes)
        samples = read_list(list_file, videos=self.root / videos_dir, classes=self.classes)
        self.setup_videos(samples, source=list_file,
                          index_file=default_index_file(index_file, splits),
                          num_frames=num_frames, stride=stride, sampling=sampling,
                          target_fps=target_fps, backend=backend)
