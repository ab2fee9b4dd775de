"""HMDB51: videos in ROOT/<videos_dir>/<class>/<name>, official splits in
ROOT/<splits_dir>/<class>_test_split<k>.txt, one "<name> <id>" per line
(id 1 = train, 2 = test, 0 = unused in this split)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from tubelet.data.decode import DecodeError, decode_frames, probe
from tubelet.data.sampling import interval_indices
from tubelet.data.seeding import sample_generator, split_key
from tubelet.registry import DATASETS, ConfigError

SUBSET_IDS = {"train": "1", "test": "2"}


def _read_split_file(path: Path, *, class_dir: Path, subset_id: str) -> list[tuple[Path, int]]:
    """(video path, 1-based line number) of the lines with `subset_id`; every line is checked,
    whatever its subset, so a broken file fails on the first run rather than the test run."""
    videos = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ConfigError(f"{path}:{lineno}: expected '<video> <0|1|2>', got {line.strip()!r}")
        if fields[1] != subset_id:
            continue
        video = class_dir / fields[0]
        if not video.is_file():
            raise ConfigError(f"{path}:{lineno}: no such video {str(video)!r}")
        videos.append((video, lineno))
    return videos


@DATASETS.register("hmdb51")
class HMDB51(Dataset):
    """Clips of `num_frames` frames `stride` apart from one HMDB51 split.

    Train clips start at random and go through `transform` with a generator seeded by
    (seed, epoch, index); test clips are the centred clip with `generator=None`.
    Items are {"video": float32 (C, T, H, W), "label": int, "index": int}.
    """

    def __init__(self, root: str, *, split: int = 1, subset: str = "train", num_frames: int = 8,
                 stride: int = 2, seed: int = 0,
                 transform: Callable[..., torch.Tensor] | None = None,
                 videos_dir: str = "videos", splits_dir: str = "splits") -> None:
        if subset not in SUBSET_IDS:
            raise ConfigError(f"subset: expected one of {sorted(SUBSET_IDS)}, "
                              f"got {subset!r}")
        if num_frames < 1 or stride < 1:
            raise ConfigError(f"num_frames, stride: must be >= 1, "
                              f"got {num_frames}, {stride}")
        self.root, self.subset = Path(root), subset
        self.num_frames, self.stride = num_frames, stride
        self.seed, self.transform = seed, transform
        for name, path in (("root", self.root), ("splits_dir", self.root / splits_dir),
                           ("videos_dir", self.root / videos_dir)):
            if not path.is_dir():
                raise ConfigError(f"{name}: no such directory {str(path)!r}")

        suffix = f"_test_split{split}.txt"
        split_files = sorted((self.root / splits_dir).glob(f"*{suffix}"))
        if not split_files:
            raise ConfigError(f"split: no '*{suffix}' files in "
                              f"{str(self.root / splits_dir)!r}")
        self.classes = [f.name[:-len(suffix)] for f in split_files]
        self.num_classes = len(self.classes)

        # (video, label, frame count), probed once here so __getitem__ only decodes.
        self.samples: list[tuple[Path, int, int]] = []
        for label, (class_name, split_file) in enumerate(zip(self.classes, split_files)):
            class_dir = self.root / videos_dir / class_name
            for video, lineno in _read_split_file(split_file, class_dir=class_dir,
                                                  subset_id=SUBSET_IDS[subset]):
                try:
                    num_video_frames = probe(video).num_frames
                except DecodeError as err:
                    raise ConfigError(f"{split_file}:{lineno}: {err}") from err
                self.samples.append((video, label, num_video_frames))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = split_key(key)
        video_path, label, num_video_frames = self.samples[index]
        generator = sample_generator(self.seed, epoch, index) if self.subset == "train" else None
        indices = interval_indices(num_video_frames, num_frames=self.num_frames,
                                   stride=self.stride, generator=generator)
        video = decode_frames(video_path, indices).permute(3, 0, 1, 2)  # (T,H,W,C) -> (C,T,H,W)
        if self.transform is not None:
            video = self.transform(video, generator=generator)
        if video.dtype == torch.uint8:
            # A pipeline without `normalize` (or no pipeline) still yields floats in [0, 1].
            video = video.float() / 255
        return {"video": video.contiguous(), "label": label, "index": index}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, subset={self.subset!r}, "
                f"num_samples={len(self)}, num_classes={self.num_classes})")
