"""`VideoDataset`: the base of every video-file format (video_list, hmdb51, ucf101, kinetics,
ssv2). A subclass parses its annotations into a `SampleTable` and calls `setup_videos`; this class
reads the metadata index (never opening a video to learn its length), samples frame indices and
decodes them.

Clip options shared by all video formats (keyword arguments of each format):
    num_frames, stride        frames per clip and the gap between them (interval sampling)
    sampling                  "interval" (dense, random start in train, centre in test) or
                              "segment" (TSN: one frame per equal segment; stride unused)
    target_fps                resample to this frame rate before sampling (None: native rate)
    temporal_views, spatial_crops   test views per video (see data/datasets/base.py)
    repeat                    one epoch sees the set `repeat` times
    backend                   "pyav" (default), "torchcodec" or "decord"
    index_file                where the metadata index lives (default: next to the annotations)

A sample path that is a folder of images ("rawframes") is read with the frame-folder backend.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tubelet.data.datasets.base import ClipDataset, SampleTable, check_file
from tubelet.data.decode import DecodeError, check_backend, decode_frames, read_images
from tubelet.data.metadata import frame_files, video_infos
from tubelet.data.tables import InfoTable
from tubelet.data.sampling import SAMPLINGS, clip_indices
from tubelet.registry import ConfigError, did_you_mean

log = logging.getLogger("tubelet")
INDEX_NAME = "tubelet_index.npz"


class VideoDataset(ClipDataset):
    variable_frames = True  # load() takes num_frames: dynamic batches can vary the length

    def open_annotations(self, annotations: str, **base: Any) -> Path:
        """The opening of a format read from one annotation file: `ClipDataset.__init__` with
        `base` (subset, seed, transform, temporal_views, spatial_crops, repeat, to_float),
        then the file, checked. Returns its path."""
        ClipDataset.__init__(self, **base)
        path = Path(annotations)
        check_file("annotations", path)
        return path

    def setup_videos(self, samples: SampleTable, *, source: str | Path, index_file: Path,
                     num_frames: int, stride: int, sampling: str, target_fps: float | None,
                     backend: str) -> None:
        """Check the clip options, take `samples` (annotated in `source`) and read their
        metadata from the index, probing the files it lacks."""
        if num_frames < 1 or stride < 1:
            raise ConfigError(f"num_frames, stride: must be >= 1, got {num_frames}, {stride}")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"sampling: unknown {sampling!r}{did_you_mean(sampling, SAMPLINGS)}")
        if target_fps is not None and target_fps <= 0:
            raise ConfigError(f"target_fps: must be > 0, got {target_fps}")
        if not len(samples):
            raise ConfigError(f"index_file: no samples found for {index_file.parent}")
        check_backend(backend)
        self.num_frames, self.stride, self.sampling = num_frames, stride, sampling
        self.target_fps, self.backend = target_fps, backend
        self.set_samples(samples, source=source)
        infos, errors = video_infos(samples.paths, index_file=index_file)
        self.bad.update({i: f"{samples.where(i)}: {reason}" for i, reason in errors.items()})
        bad = np.zeros(len(samples), dtype=bool)
        bad[list(errors)] = True
        self.infos = InfoTable(infos, bad)
        if self.bad:
            log.warning("%d of %d videos listed in %s are missing or unreadable (first: %s)",
                        len(self.bad), len(samples), index_file.parent, self.bad_files[0][1])

    def load(self, i: int, generator: torch.Generator | None, view: int,
             num_views: int, num_frames: int | None = None) -> torch.Tensor:
        info = self.infos[i]
        assert info is not None, "a bad sample is never loaded"
        first, count = self.frame_span(i, info.num_frames)
        indices = clip_indices(count, fps=info.fps, sampling=self.sampling,
                               num_frames=num_frames or self.num_frames, stride=self.stride,
                               target_fps=self.target_fps, generator=generator, view=view,
                               num_views=num_views)
        indices = [first + k for k in indices]
        path = self.samples.paths[i]  # type: ignore[attr-defined]
        if path.is_dir():  # a frame folder: the frame-folder backend
            files = frame_files(path)
            if max(indices) >= len(files):
                raise DecodeError(f"{path}: frame {max(indices)} not found; {len(files)} images")
            frames = read_images([files[k] for k in indices])
        else:
            frames = decode_frames(path, indices, backend=self.backend, info=info)
        return frames.permute(3, 0, 1, 2)  # (T,H,W,C) -> (C,T,H,W)

    def frame_span(self, i: int, num_frames: int) -> tuple[int, int]:
        """(first frame, frame count) of the part of sample `i` its clips come from: the whole
        video here; a time window of it in `tubelet predict --window` (tubelet/predict.py)."""
        return 0, num_frames


def default_index_file(index_file: str | None, annotations: Path) -> Path:
    """`index_file` if given, else tubelet_index.npz in the annotations' directory."""
    if index_file:
        return Path(index_file)
    return (annotations if annotations.is_dir() else annotations.parent) / INDEX_NAME


def label_in_range(label: int, num_classes: int | None, where: str) -> int:
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise ConfigError(f"{where}: label {label} out of range [0, {num_classes})")
    return label
