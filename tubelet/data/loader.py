"""Resumable distributed sampling, worker seeding and DataLoader construction."""
from __future__ import annotations

import random
import signal
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tubelet.data.seeding import SampleKey
from tubelet.registry import ConfigError


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The epoch's sample order: a permutation that depends only on (seed, epoch)."""
    if not shuffle:
        return list(range(num_samples))
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_samples, generator=g).tolist()


class ResumableSampler(Sampler[list[SampleKey]]):
    """Shuffled train batch sampler: yields batches of `(index, epoch)` keys and can start
    mid-epoch, at any world size.

    Global batch k is `order[k*G:(k+1)*G]` with G = batch_size x world_size, and rank r takes
    every W-th key of it, so once k batches are done the consumed set is exactly
    `order[:k*G]` whatever the world size. `set_epoch(epoch, batches_done=k)` continues from
    there: a run saved by 2 ranks resumes on 1 at the first sample neither rank had seen. The
    tail short of a whole global batch is dropped so every rank runs the same number of
    steps (else the collectives of the ranks with more would wait forever).

    The Trainer talks to it, and to `DynamicBatchSampler`, only through `num_batches`,
    `samples_before`, `batches_before`, `set_epoch`, `global_batch`, `plan` and `describe`.
    """

    plan = None  # the batch plan a resume must keep, beyond the global batch: none here

    def __init__(self, num_samples: int, *, batch_size: int, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"data.batch_size: must be >= 1, got {batch_size}")
        if num_samples < batch_size * world_size:
            raise ConfigError(f"data.batch_size: {batch_size} x {world_size} ranks exceeds the "
                              f"{num_samples} training samples")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size  # samples one batch takes over all ranks
        self.epoch, self.batches_done = 0, 0

    def describe(self) -> str:
        return f"world size {self.world_size} x batch {self.batch_size}"

    def num_batches(self, epoch: int) -> int:
        """Batches per rank in the whole of `epoch`."""
        return self.num_samples // self.global_batch

    def samples_before(self, epoch: int, batches: int) -> int:
        """Samples, over all ranks, that the first `batches` batches of `epoch` consume."""
        return batches * self.global_batch

    def batches_before(self, epoch: int, samples: int) -> int:
        """The inverse of `samples_before`: how many batches consumed `samples`."""
        assert samples % self.global_batch == 0, (samples, self.global_batch)
        return samples // self.global_batch

    def set_epoch(self, epoch: int, *, batches_done: int = 0) -> None:
        """Start `epoch` after its first `batches_done` batches."""
        assert 0 <= batches_done <= self.num_batches(epoch), batches_done
        self.epoch, self.batches_done = epoch, batches_done

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = epoch_order(self.num_samples, seed=self.seed, epoch=self.epoch,
                            shuffle=self.shuffle)
        size = self.global_batch
        for k in range(self.batches_done, self.num_batches(self.epoch)):
            block = order[k * size:(k + 1) * size]
            yield [(i, self.epoch) for i in block[self.rank::self.world_size]]

    def __len__(self) -> int:
        return self.num_batches(self.epoch) - self.batches_done


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes groups r, r+W, ... of `group_size` consecutive indices.
    Every sample goes to exactly one rank and none is padded or repeated, so reduced metrics
    count each sample once. With `group_size` = the test views per video, all views of a
    video land on one rank, one after another, so the rank can fold them at once."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1,
                 group_size: int = 1) -> None:
        groups = range(rank, -(-num_samples // group_size), world_size)
        self.indices = [i for g in groups
                        for i in range(g * group_size, min((g + 1) * group_size, num_samples))]

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
        # Ctrl-C and a scheduler's SIGTERM reach the workers too (one process group): they must
        # keep serving batches while the main process finishes its step and saves, then it
        # shuts them down itself (engine/guard.py)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        words = [self.seed & 0xFFFFFFFF, self.rank, self.epoch, worker_id]
        s = int(np.random.SeedSequence(words).generate_state(1)[0])
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


def build_loader(dataset: Dataset, *, sampler: Sampler, batch_size: int | None = None,
                 num_workers: int = 0, seed: int = 0, rank: int = 0, epoch: int = 0,
                 pin_memory: bool = False, prefetch_factor: int | None = None,
                 persistent_workers: bool = False,
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A DataLoader whose own generator is seeded here, so building one never draws from the
    global torch RNG (which would shift dropout randomness after a resume). Without
    `batch_size`, `sampler` is a batch sampler (it yields lists of keys)."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor or 2, persistent_workers=persistent_workers,
                      worker_init_fn=_WorkerSeed(seed, rank, epoch))
    if batch_size is None:
        kwargs.update(batch_sampler=sampler)
    else:
        kwargs.update(batch_size=batch_size, sampler=sampler)
    return DataLoader(dataset, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), collate_fn=collate_fn,
                      **kwargs)
