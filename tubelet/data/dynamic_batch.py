"""Dynamic batches, in the style of VGGT's DynamicBatchSampler: every batch draws a clip shape,
a frame count and an aspect ratio, and takes as many clips as fit a fixed pixel budget.

    data:
      batch_size: 8                  # still the nominal batch: val loader, `blr` scaling
      dynamic_batch:
        max_pixels: 1605632          # per rank per batch: clips x T x H x W stays at or below
        size: 224                    # the reference frame: every shape keeps about 224^2 pixels
        num_frames: [8, 16]          # drawn uniformly per batch
        aspect_ratios: [0.75, 1.0, 1.333]   # width / height, drawn uniformly per batch
        multiple_of: 16              # H and W are rounded to it (the patch size)

A 16x224^2 batch then holds 2 clips and an 8x224^2 one 4: the pixels per step, hence the
activation memory, stay about level while the model sees several lengths and shapes (VGGT
draws the image count and the aspect ratio per batch and sets the batch size from them).

The plan of an epoch (each batch's shape and size) is a function of (seed, epoch, number of
samples, world size) alone. Every rank therefore draws the same shapes in the same order, and
a resume at batch k continues exactly: the trainer stores the samples consumed, the plan turns
it back into a batch count.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from tubelet.data.loader import epoch_order
from tubelet.registry import ConfigError

Shape = tuple[int, int, int]  # (T, H, W) of every clip in one batch
PLAN_SALT = 0xB47C5  # keeps the plan's stream apart from the per-sample streams of seeding.py


def clip_shapes(*, size: int | Sequence[int], num_frames: Sequence[int],
                aspect_ratios: Sequence[float], multiple_of: int) -> list[Shape]:
    """Every (T, H, W) a batch can draw: H x W keeps the area of `size`, W / H the ratio."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    area, shapes = height * width, []
    for t, ratio in itertools.product(num_frames, aspect_ratios):
        if t < 1 or ratio <= 0:
            raise ConfigError(f"data.dynamic_batch: num_frames must be >= 1 and aspect_ratios "
                              f"> 0, got {t} and {ratio}")
        h = max(multiple_of, round((area / ratio) ** 0.5 / multiple_of) * multiple_of)
        w = max(multiple_of, round((area * ratio) ** 0.5 / multiple_of) * multiple_of)
        shapes.append((int(t), h, w))
    return shapes


class DynamicBatchSampler(Sampler[list[tuple[int, int, Shape]]]):
    """Yields batches of `(index, epoch, (T, H, W))` keys; a dataset given such a key samples
    T frames and its sizing transform outputs H x W (see ClipDataset). Same interface towards
    the Trainer as `ResumableSampler`."""

    def __init__(self, num_samples: int, *, max_pixels: int, num_frames: Sequence[int],
                 size: int | Sequence[int] = 224, aspect_ratios: Sequence[float] = (1.0,),
                 multiple_of: int = 16, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        if not num_frames or not aspect_ratios:
            raise ConfigError("data.dynamic_batch: num_frames and aspect_ratios need at least "
                              "one value each")
        self.shapes = clip_shapes(size=size, num_frames=num_frames, aspect_ratios=aspect_ratios,
                                  multiple_of=multiple_of)
        largest = max(self.shapes, key=lambda s: s[0] * s[1] * s[2])
        if max_pixels < largest[0] * largest[1] * largest[2]:
            raise ConfigError(f"data.dynamic_batch.max_pixels: {max_pixels} is less than one "
                              f"clip of the largest shape {largest} (T, H, W)")
        # per-rank clips per batch for each shape: as many as fit the budget
        self.sizes = [max_pixels // (t * h * w) for t, h, w in self.shapes]
        if num_samples < max(self.sizes) * world_size:
            raise ConfigError(f"data.dynamic_batch.max_pixels: a batch of the smallest shape "
                              f"takes {max(self.sizes)} x {world_size} ranks clips, more than "
                              f"the {num_samples} training samples")
        self.num_samples, self.max_pixels = num_samples, max_pixels
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.global_batch = max_pixels * world_size  # the pixel budget over all ranks
        self.plan = {"world_size": world_size, "max_pixels": max_pixels,
                     "shapes": [list(s) for s in self.shapes]}
        self.epoch, self.batches_done = 0, 0
        self._cached: tuple[int, list[int], np.ndarray] | None = None

    def describe(self) -> str:
        return f"world size {self.world_size} x {self.max_pixels} pixels (dynamic batches)"

    def epoch_plan(self, epoch: int) -> tuple[list[int], np.ndarray]:
        """(shape number of each batch, samples consumed before each batch and after the last)."""
        if self._cached is None or self._cached[0] != epoch:
            state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, PLAN_SALT])
            rng = np.random.Generator(np.random.PCG64(state))
            # enough draws for the epoch even if every batch drew the largest batch size
            bound = self.num_samples // (min(self.sizes) * self.world_size) + 1
            choice = rng.integers(0, len(self.shapes), size=bound)
            taken = np.asarray(self.sizes)[choice] * self.world_size
            ends = np.cumsum(taken)
            count = int(np.searchsorted(ends, self.num_samples, side="right"))
            offsets = np.concatenate([[0], ends[:count]])
            self._cached = (epoch, choice[:count].tolist(), offsets)
        return self._cached[1], self._cached[2]

    def num_batches(self, epoch: int) -> int:
        return len(self.epoch_plan(epoch)[0])

    def samples_before(self, epoch: int, batches: int) -> int:
        return int(self.epoch_plan(epoch)[1][batches])

    def batches_before(self, epoch: int, samples: int) -> int:
        offsets = self.epoch_plan(epoch)[1]
        k = int(np.searchsorted(offsets, samples))
        assert k < len(offsets) and offsets[k] == samples, (samples, "not a batch boundary")
        return k

    def set_epoch(self, epoch: int, *, batches_done: int = 0) -> None:
        assert 0 <= batches_done <= self.num_batches(epoch), batches_done
        self.epoch, self.batches_done = epoch, batches_done

    def __iter__(self) -> Iterator[list[tuple[int, int, Shape]]]:
        order = epoch_order(self.num_samples, seed=self.seed, epoch=self.epoch,
                            shuffle=self.shuffle)
        choice, offsets = self.epoch_plan(self.epoch)
        for k in range(self.batches_done, len(choice)):
            shape = self.shapes[choice[k]]
            block = order[offsets[k]:offsets[k + 1]]
            yield [(i, self.epoch, shape) for i in block[self.rank::self.world_size]]

    def __len__(self) -> int:
        return self.num_batches(self.epoch) - self.batches_done

    def summary(self) -> dict[str, Any]:
        """Shapes and per-rank batch sizes, for the startup log."""
        return {f"{t}x{h}x{w}": b for (t, h, w), b in zip(self.shapes, self.sizes)}


def check_dynamic_dataset(dataset: Any, *, num_frames: Sequence[int]) -> None:
    """Every leaf of the train set must be able to honour a batch's shape: a sizing transform
    in its `transforms` (the override needs somewhere to go), and clips of every length in
    `num_frames` when there are several."""
    children = getattr(dataset, "datasets", None) or (
        [dataset.dataset] if hasattr(dataset, "dataset") else None)
    if children:
        for child in children:
            check_dynamic_dataset(child, num_frames=num_frames)
        return
    name = type(dataset).__name__
    if not getattr(getattr(dataset, "transform", None), "sets_size", False):
        raise ConfigError(f"data.dynamic_batch: the {name} train set needs a sizing transform "
                          "(random_resized_crop, resize, random_crop or center_crop) in its "
                          "`transforms`, to produce each batch's H x W")
    if len(set(num_frames)) > 1 and not getattr(dataset, "variable_frames", False):
        raise ConfigError(f"data.dynamic_batch.num_frames: {name} clips have a fixed length; "
                          f"give one value, not {list(num_frames)}")
