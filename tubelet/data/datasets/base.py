"""The shared machinery of every clip dataset: per-sample seeding, multi-view test, `repeat`,
deterministic substitution of bad samples, and the output dict.

A dataset item is a dict:

    video  float32 (C, T, H, W), or uint8 when transforms run on the device after transfer
    label  int class id (classification formats) / target: float tensor (regression formats);
           absent on an unlabelled split (Kinetics' test CSV, SSv2's test.json, a video_list
           of bare paths): such a split loads for prediction, and training or computing
           metrics on it is refused (`require_labels`), so no label is ever invented
    index  int: the video's index, the same for all of its test views
    view   int: which of the `temporal_views * spatial_crops` test views this clip is (0 in train)
    bad    str: "path\\treason" of each file that failed and was replaced for this item,
           "\\n"-joined ("" if none)

Bad data: a sample whose file is missing, empty or undecodable is replaced by another sample
chosen from (seed, index, attempt) alone, and its clip is drawn from a fresh generator, so a
replacement looks the same whichever worker makes it and after any resume. The item's `bad`
field lets the main process count and list the bad files exactly (see data/batches.py).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from tubelet.data.decode import DecodeError
from tubelet.data.repeated_aug import augment_views
from tubelet.data.seeding import Key, key_shape, sample_generator, split_key
from tubelet.data.tables import Sample, SampleTable
from tubelet.data.transforms import spatial_crop
from tubelet.registry import ConfigError

MAX_SUBSTITUTES = 20  # more bad draws in a row than this means most of the set is bad


__all__ = ["ClipDataset", "Sample", "SampleTable", "check_dir", "check_file", "check_subset",
           "require_labels"]


class ClipDataset(Dataset):
    """Base class; a subclass fills `samples` (a `SampleTable`: flat arrays, so loader workers
    never touch per-video Python objects) and `classes` for classification, and implements
    `load(i, generator, view, num_views) -> uint8 (C, T, H, W)`, raising DecodeError on bad data.
    A subclass whose `load` also takes `num_frames` sets `variable_frames`: dynamic batches
    may then ask it for clips of several lengths."""

    target_key = "label"
    variable_frames = False
    num_sample = 1  # views per item; `data.train.num_sample` sets it (data/repeated_aug.py)

    def __init__(self, *, subset: str, seed: int = 0,
                 transform: Callable[..., torch.Tensor] | None = None, temporal_views: int = 1,
                 spatial_crops: int = 1, repeat: int = 1, to_float: bool = True) -> None:
        check_subset(subset, ("train", "test"))
        train = subset == "train"
        for name, value in (("temporal_views", temporal_views), ("spatial_crops", spatial_crops),
                            ("repeat", repeat)):
            if int(value) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {value}")
        if train and temporal_views * spatial_crops > 1:
            raise ConfigError("temporal_views: multi-view clips are for test subsets only")
        self.train, self.seed, self.transform = train, seed, transform
        self.temporal_views, self.spatial_crops = temporal_views, spatial_crops
        self.num_views = temporal_views * spatial_crops
        self.repeat, self.to_float = repeat, to_float
        self.samples: Sequence[Sample] = SampleTable.build([])
        self.bad: dict[int, str] = {}  # sample number -> reason, found at startup or on decode
        self.unlabelled: str | None = None  # the annotation file, when it has no labels

    def set_samples(self, samples: SampleTable, *, source: str | Path) -> None:
        """Take `samples`; an unlabelled table is refused for training (it would need
        invented labels) and remembered, so that metrics refuse it too."""
        if not samples.labelled and len(samples):
            self.unlabelled = str(source)
            if self.train:
                raise ConfigError(f"annotations: {source} has no labels; training needs them "
                                  f"(an unlabelled split is for prediction: subset: test)")
        self.samples = samples

    @property
    def labelled(self) -> bool:
        return self.unlabelled is None

    # ------------------------------------------------------------------ for subclasses
    def load(self, i: int, generator: torch.Generator | None, view: int,
             num_views: int) -> torch.Tensor:
        raise NotImplementedError

    def augment_pair(self, video: torch.Tensor, target: Any,
                     generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        """Train-time augmentation that must change the target with the clip (a mirrored clip
        mirrors a gaze direction). None here; runs after `transform`."""
        return video, target

    def num_videos(self) -> int:
        return len(self.samples) * self.repeat

    @property
    def num_files(self) -> int:
        return len(self.samples)

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        """(path, reason) of the samples known to be bad so far."""
        return [(str(self.samples[i].path), self.bad[i]) for i in sorted(self.bad)]

    # ------------------------------------------------------------------ Dataset
    def __len__(self) -> int:
        return self.num_videos() * self.num_views

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, epoch = split_key(key)
        shape = key_shape(key)  # (T, H, W) when a dynamic batch asks for one
        frames = {"num_frames": shape[0]} if shape and self.variable_frames else {}
        video_index, view = divmod(index, self.num_views)
        temporal_view, crop = divmod(view, self.spatial_crops)
        i = video_index % len(self.samples)
        bad_paths = []
        for attempt in range(MAX_SUBSTITUTES + 1):
            if attempt:
                i = self.substitute(index, attempt)
            # A fresh generator per attempt: the clip does not depend on how many draws a
            # failed attempt made, nor on whether this worker already knew the file was bad.
            generator = sample_generator(self.seed, epoch, index) if self.train else None
            if i not in self.bad:
                try:
                    video = self.load(i, generator, temporal_view, self.temporal_views, **frames)
                    break
                except DecodeError as err:
                    self.bad[i] = str(err)
            bad_paths.append(f"{self.samples[i].path}\t{self.bad[i]}")
        else:
            raise DecodeError(f"{MAX_SUBSTITUTES + 1} bad samples in a row for index {index} "
                              f"(last: {self.bad[i]}); is the dataset readable?")
        target = self.samples.target(i)  # type: ignore[attr-defined]
        augment = functools.partial(self.augment_clip, shape=shape, crop=crop)
        if self.num_sample > 1:  # K augmented views of this one decode (data/repeated_aug.py)
            video, target = augment_views(video, target, num_sample=self.num_sample,
                                          generator=generator, seed=self.seed, epoch=epoch,
                                          index=index, augment=augment)
        else:
            video, target = augment(video, target, generator)
        item = {"video": video.contiguous(), "index": video_index, "view": view,
                "bad": "\n".join(bad_paths)}
        if target is not None:  # an unlabelled split has no label, not a placeholder
            item[self.target_key] = target
        return item

    def augment_clip(self, video: torch.Tensor, target: Any, generator: torch.Generator | None, *,
                shape: tuple[int, int, int] | None, crop: int) -> tuple[torch.Tensor, Any]:
        """A decoded uint8 clip to the item's clip: transforms, paired augmentation, the test
        crop, floats."""
        if shape is not None:
            video = self.transform(video, generator=generator, size=shape[1:])
        elif self.transform is not None:
            video = self.transform(video, generator=generator)
        if generator is not None:
            video, target = self.augment_pair(video, target, generator)
        if self.spatial_crops > 1:
            video = spatial_crop(video, index=crop, num_crops=self.spatial_crops)
        if self.to_float and video.dtype == torch.uint8:
            # A pipeline without `normalize` (or no pipeline) still yields floats in [0, 1].
            video = video.float() / 255
        return video, target

    def substitute(self, index: int, attempt: int) -> int:
        """The replacement for a bad sample: a function of (seed, index, attempt) only."""
        g = sample_generator(self.seed, 1_000_003 + attempt, index)
        return int(torch.randint(0, len(self.samples), (1,), generator=g))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={len(self.samples)}, train={self.train}, "
                f"views={self.num_views}, repeat={self.repeat}, bad={len(self.bad)})")


def require_labels(dataset: Any, *, key: str) -> None:
    """Refuse to train or score on an unlabelled split (`key`: "data.train", "data.val")."""
    unlabelled = getattr(dataset, "unlabelled", None)
    if unlabelled is not None:
        raise ConfigError(f"{key}: {unlabelled} has no labels; training and metrics need them "
                          f"(an unlabelled split loads for prediction only)")


def check_subset(subset: str, choices: dict[str, Any] | tuple[str, ...]) -> None:
    if subset not in choices:
        raise ConfigError(f"subset: expected one of {sorted(choices)}, got {subset!r}")


def check_dir(name: str, path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(f"{name}: no such directory {str(path)!r}")


def check_file(name: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{name}: no such file {str(path)!r}")
