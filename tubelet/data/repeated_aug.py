"""Repeated augmentation (`data.train.num_sample: K`): K independently augmented clips of one
decode, in the same batch.

VideoMAE's finetuning (`--num_sample`, run_class_finetuning.py and its datasets' `__getitem__`)
decodes a video once and runs its spatial augmentation K times on the frames; its
`multiple_samples_collate` flattens the K clips of each of the `--batch_size` videos into one
batch of batch_size x K clips. `--batch_size` (and with it the lr scaling, `total_batch_size =
batch_size * update_freq * world_size`, and the steps per epoch) counts videos, not clips. tubelet
does the same: `data.batch_size` counts videos (dataset items, decodes), the model sees
`batch_size * num_sample` clips per step, and the sampler, the resume checks and `blr` scaling
are unchanged.

View k of a sample takes its augmentation from a generator seeded by (seed, epoch, index, k)
(view 0 keeps the sample's own generator, so K = 1 is exactly the plain dataset): the clips
depend on neither the rank, nor the worker, nor a resume.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import default_collate

from tubelet.registry import ConfigError


def view_generator(seed: int, epoch: int, index: int, view: int) -> torch.Generator:
    """The generator of augmented view `view` >= 1 of sample (epoch, index)."""
    words = [seed & 0xFFFFFFFF, epoch, index, view]  # 4 words: never a sample_generator's state
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def augment_views(decoded: torch.Tensor, target: Any, *, num_sample: int,
                  generator: torch.Generator, seed: int, epoch: int, index: int,
                  augment: Callable[[torch.Tensor, Any, torch.Generator], tuple[torch.Tensor, Any]]
                  ) -> tuple[torch.Tensor, Any]:
    """`augment(decoded, target, generator)` K times: (K, C, T, H, W) clips and the K targets
    stacked (a target can change with the clip, e.g. a mirrored gaze)."""
    views, targets = [], []
    for k in range(num_sample):
        g = generator if k == 0 else view_generator(seed, epoch, index, k)
        video, t = augment(decoded, target, g)
        views.append(video)
        targets.append(t)
    stacked = None if target is None else torch.stack([torch.as_tensor(t) for t in targets])
    return torch.stack(views), stacked


class RepeatedCollate:
    """Collate items that carry K views: the per-view fields ((B, K, ...) after the default
    collate) become (B*K, ...), sample-major as VideoMAE's `multiple_samples_collate`; the
    per-sample tensors (index, view, source) are repeated K times; the `bad` strings stay one
    per sample, so a bad file is counted once per decode."""

    def __init__(self, num_sample: int, per_view: tuple[str, ...]) -> None:
        self.num_sample, self.per_view = num_sample, per_view

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(items)
        for key, value in batch.items():
            if not torch.is_tensor(value):
                continue
            if key in self.per_view:
                batch[key] = value.flatten(0, 1)
            else:
                batch[key] = value.repeat_interleave(self.num_sample, dim=0)
        return batch


def set_num_sample(dataset: Any, num_sample: int, *, key: str) -> tuple[str, ...]:
    """Make `dataset` (a clip dataset, or composed/repeat of them) return `num_sample` views
    per item; the per-view field names, for `RepeatedCollate`."""
    from tubelet.data.datasets.base import ClipDataset  # noqa: PLC0415 - datasets import data
    children = getattr(dataset, "datasets", None) or (
        [dataset.dataset] if hasattr(dataset, "dataset") else None)
    if isinstance(dataset, ClipDataset):
        if not dataset.train:
            raise ConfigError(f"{key}.num_sample: repeated augmentation is for training "
                              "(subset: train)")
        dataset.num_sample = num_sample
        return ("video", dataset.target_key)
    if children:
        fields: tuple[str, ...] = ()
        for child in children:
            fields += set_num_sample(child, num_sample, key=key)
        return tuple(dict.fromkeys(fields))
    raise ConfigError(f"{key}.num_sample: {type(dataset).__name__} decodes no clips to augment "
                      "again; repeated augmentation needs a video or image dataset")
