"""Per-sample randomness: every random choice a dataset or transform makes for one sample comes
from a generator seeded by (seed, epoch, index). Neither the number of loader workers nor a
resume in the middle of an epoch can then change what a sample looks like."""
from __future__ import annotations

import numpy as np
import torch

SampleKey = tuple[int, int]  # (index, epoch): what the train sampler yields


def split_key(key: int | tuple[int, int] | list[int]) -> SampleKey:
    """A dataset is indexed by `index` (epoch 0) or by the sampler's `(index, epoch)` key."""
    if isinstance(key, (tuple, list)):
        index, epoch = key
        return int(index), int(epoch)
    return int(key), 0


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, index)."""
    # SeedSequence mixes the three words well, so neighbouring indices get unrelated streams.
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
