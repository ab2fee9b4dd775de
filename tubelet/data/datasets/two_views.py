"""Two views of each video for contrastive pretraining: two clips, each with its own random draws.

    data.train:
      type: two_views
      dataset: {type: synthetic_actions, root: data/synth_actions, subset: train, ...}
      transforms: [...]            # or the child's own; applied to each view with its own draws
      transforms2: [...]           # optional: the second view's own list (MoCo v3 / BYOL's
                                   # asymmetric pair); default: `transforms` for both

An item holds `video` and `video2`: two clips of the same video, each with its own start frame
(interval sampling) or segment offsets, and its own crop/flip/... draws from the same
`transforms` (the second view from `transforms2`, when given). `video` is exactly the clip the
child dataset alone gives for the same key (the same per-sample generator); `video2` draws from
a second generator of (seed, epoch, index).
When the two clips' frame spans overlap, their frames come from one decode of the file;
otherwise each clip is decoded on its own (one decode would run through the gap).
A bad file is replaced for both views at once, as the child replaces it (data/datasets/base.py).
The child must be a video-file format (video_list, hmdb51, ucf101, kinetics, ssv2,
synthetic_actions, ...); its labels are kept (`label`), unused by the contrastive tasks.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from tubelet.data.datasets.base import MAX_SUBSTITUTES
from tubelet.data.datasets.composed import build_child
from tubelet.data.datasets.video import VideoDataset
from tubelet.data.decode import DecodeError, decode_frames, read_images
from tubelet.data.metadata import frame_files
from tubelet.data.sampling import clip_indices
from tubelet.data.seeding import sample_generator, split_key
from tubelet.registry import DATASETS, TRANSFORMS, ConfigError, build, validate

SECOND_VIEW = 1 << 30  # the second view's generator: another "epoch" word, never a real one


def _out_size(transform: Any) -> tuple[int, int] | None:
    """The (H, W) a transform list makes: its last sizing transform's; None keeps the clip's."""
    sizing = [t for t in getattr(transform, "transforms", []) if getattr(t, "sets_size", False)]
    return (sizing[-1].height, sizing[-1].width) if sizing else None


def _second_transform(steps: Any, *, first: Any) -> Any:
    """Build `transforms2`, checked as `transforms` is, and refuse a second view of another
    size than the first (the two are compared as one batch)."""
    from tubelet.data.transforms import Compose
    if not isinstance(steps, list):
        raise ConfigError(f"transforms2: expected a list of transforms, got {steps!r}")
    built = []
    for i, node in enumerate(steps):
        validate(node, TRANSFORMS, key=f"transforms2[{i}]")
        try:
            built.append(build(node, TRANSFORMS))
        except ConfigError as err:
            raise ConfigError(f"transforms2[{i}].{err}") from None
    second = Compose(built) if built else None
    if _out_size(second) != _out_size(first):
        raise ConfigError(f"transforms2: makes {_out_size(second) or 'the clip size'}, the first "
                          f"view's transforms {_out_size(first) or 'the clip size'}; both views "
                          f"need one size")
    return second


@DATASETS.register("two_views")
class TwoViews(Dataset):
    """The module docstring. `dataset`: the child node (a video format, with its clip options);
    the parent's `transforms` apply when the child has none."""

    num_views = 1
    variable_frames = False

    def __init__(self, dataset: dict, *, transforms2: list[dict] | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        if not to_float:
            raise ConfigError("device_transforms: not supported by two_views (they would "
                              "transform `video` only); use transforms")
        self.dataset = build_child(dataset, key="dataset", transform=transform, to_float=True)
        if not isinstance(self.dataset, VideoDataset):
            raise ConfigError(f"dataset.type: two_views needs a video-file format, got "
                              f"{dataset.get('type')!r}")
        if self.dataset.num_views != 1:
            raise ConfigError("dataset.temporal_views: two_views draws its own two clips; "
                              "leave temporal_views and spatial_crops at 1")
        self.transform2 = self.dataset.transform if transforms2 is None else \
            _second_transform(transforms2, first=self.dataset.transform)

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        return self.dataset.bad_files

    @property
    def num_files(self) -> int:
        return self.dataset.num_files

    @property
    def unlabelled(self) -> str | None:
        return self.dataset.unlabelled

    def __len__(self) -> int:
        return len(self.dataset)

    def _clip_indices(self, i: int, generator: torch.Generator) -> list[int]:
        d, info = self.dataset, self.dataset.infos[i]
        return clip_indices(info.num_frames, fps=info.fps, sampling=d.sampling,
                            num_frames=d.num_frames, stride=d.stride, target_fps=d.target_fps,
                            generator=generator)

    def load_pair(self, i: int, generators: tuple[torch.Generator, torch.Generator]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (C, T, H, W) x 2: the two clips of sample `i`, decoded once if they overlap."""
        first, second = (self._clip_indices(i, g) for g in generators)
        path = self.dataset.samples.paths[i]
        if path.is_dir():  # a frame folder: each image is read once per view
            files = frame_files(path)
            if max(first + second) >= len(files):
                raise DecodeError(f"{path}: frame {max(first + second)} not found; "
                                  f"{len(files)} images")
            clips = [read_images([files[k] for k in idx]) for idx in (first, second)]
        else:
            info, backend = self.dataset.infos[i], self.dataset.backend
            if min(second) <= max(first) and min(first) <= max(second):
                frames = decode_frames(path, first + second, backend=backend, info=info)
                clips = [frames[:len(first)], frames[len(first):]]
            else:
                clips = [decode_frames(path, idx, backend=backend, info=info)
                         for idx in (first, second)]
        return clips[0].permute(3, 0, 1, 2), clips[1].permute(3, 0, 1, 2)  # (T,H,W,C) -> (C,T,H,W)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, epoch = split_key(key)
        d = self.dataset
        i = index % len(d.samples)
        bad_paths = []
        for attempt in range(MAX_SUBSTITUTES + 1):
            if attempt:
                i = d.substitute(index, attempt)
            # fresh generators per attempt, as ClipDataset: the clip depends on (seed, epoch,
            # index) alone, not on the draws a failed attempt made
            generators = (sample_generator(d.seed, epoch, index),
                          sample_generator(d.seed, epoch + SECOND_VIEW, index))
            if i not in d.bad:
                try:
                    views = self.load_pair(i, generators)
                    break
                except DecodeError as err:
                    d.bad[i] = str(err)
            bad_paths.append(f"{d.samples[i].path}\t{d.bad[i]}")
        else:
            raise DecodeError(f"{MAX_SUBSTITUTES + 1} bad samples in a row for index {index} "
                              f"(last: {d.bad[i]}); is the dataset readable?")
        out = []
        for video, generator, transform in zip(views, generators, (d.transform, self.transform2)):
            if transform is not None:
                video = transform(video, generator=generator)
            if video.dtype == torch.uint8:
                video = video.float() / 255
            out.append(video.contiguous())
        item = {"video": out[0], "video2": out[1], "index": index, "view": 0,
                "bad": "\n".join(bad_paths)}
        target = d.samples.target(i)
        if target is not None:
            item[d.target_key] = target
        return item
