"""Resumable distributed sampling, worker seeding and DataLoader construction."""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tubelet.data.seeding import SampleKey


class ResumableSampler(Sampler[SampleKey]):
    """Shuffled train sampler that yields `(index, epoch)` keys and can start mid-epoch.

    The permutation depends only on (seed, epoch), each rank takes a strided share of it with
    the tail dropped so every rank runs the same number of steps, and `set_epoch(epoch,
    start=n)` skips the first `n` keys of this rank's share: a resumed run continues at the
    first batch it has not seen.
    """

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < world_size:
            raise ValueError(f"dataset has {num_samples} samples, fewer than {world_size} ranks")
        self.num_samples = num_samples
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def num_per_rank(self) -> int:
        return self.num_samples // self.world_size

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        assert 0 <= start <= self.num_per_rank, (start, self.num_per_rank)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[SampleKey]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        mine = order[self.rank: self.num_per_rank * self.world_size: self.world_size]
        return iter([(i, self.epoch) for i in mine[self.start:]])

    def __len__(self) -> int:
        return self.num_per_rank - self.start


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
