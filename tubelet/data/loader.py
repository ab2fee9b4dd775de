"""Resumable distributed sampling, worker seeding and DataLoader construction."""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tubelet.data.seeding import SampleKey


class ResumableSampler(Sampler[SampleKey]):
    """Shuffled train sampler that yields `(index, epoch)` keys and can start mid-epoch, at
    any world size.

    The permutation depends only on (seed, epoch). Rank r of W takes `order[r::W]`, so once
    every rank has drawn k keys the consumed set is exactly `order[:k*W]`. `set_epoch(epoch,
    consumed=c)` continues from `order[c:]`, sharded over the current world size: a run saved
    by 2 ranks resumes on 1 at the first sample neither rank had seen. The tail that does not
    divide evenly is dropped so every rank runs the same number of steps (else the collectives
    of the ranks with more would wait forever).
    """

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < world_size:
            raise ValueError(f"dataset has {num_samples} samples, fewer than {world_size} ranks")
        self.num_samples = num_samples
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.consumed = 0, 0

    @property
    def num_per_rank(self) -> int:
        """Keys per rank in a whole epoch (started at 0)."""
        return self.num_samples // self.world_size

    def set_epoch(self, epoch: int, *, consumed: int = 0) -> None:
        """Start `epoch` after its first `consumed` keys, counted over all ranks."""
        assert 0 <= consumed <= self.num_samples, (consumed, self.num_samples)
        self.epoch, self.consumed = epoch, consumed

    def __iter__(self) -> Iterator[SampleKey]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        end = self.consumed + len(self) * self.world_size
        mine = order[self.consumed + self.rank: end: self.world_size]
        return iter([(i, self.epoch) for i in mine])

    def __len__(self) -> int:
        return (self.num_samples - self.consumed) // self.world_size


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r+W, ... Every sample goes to exactly one
    rank and none is padded or repeated, so reduced metrics count each sample once."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _WorkerSeed:
    """worker_init_fn: seed python/numpy/torch in each worker from (seed, rank, epoch, worker).
    Sample augmentation does not depend on it (see data/seeding.py); this covers third-party
    code that draws from global RNGs."""

    def __init__(self, seed: int, rank: int, epoch: int) -> None:
        self.seed, self.rank, self.epoch = seed, rank, epoch

    def __call__(self, worker_id: int) -> None:
        words = [self.seed & 0xFFFFFFFF, self.rank, self.epoch, worker_id]
        s = int(np.random.SeedSequence(words).generate_state(1)[0])
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


def build_loader(dataset: Dataset, *, batch_size: int, sampler: Sampler, num_workers: int = 0,
                 seed: int = 0, rank: int = 0, epoch: int = 0, drop_last: bool = False,
                 pin_memory: bool = False, prefetch_factor: int | None = None,
                 persistent_workers: bool = False) -> DataLoader:
    """A DataLoader whose own generator is seeded here, so building one never draws from the
    global torch RNG (which would shift dropout randomness after a resume)."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor or 2, persistent_workers=persistent_workers,
                      worker_init_fn=_WorkerSeed(seed, rank, epoch))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), **kwargs)
