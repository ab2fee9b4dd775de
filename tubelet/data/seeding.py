"""Per-sample randomness: every random choice a dataset or transform makes for one sample comes
from a generator seeded by (seed, epoch, index). Neither the number of loader workers nor a
resume in the middle of an epoch can then change what a sample looks like."""
from __future__ import annotations

import numpy as np
import torch

SampleKey = tuple[int, int]  # (index, epoch): what the train sampler yields
Key = int | tuple  # an index, `(index, epoch)`, or `(index, epoch, (T, H, W))` (dynamic batches)


def split_key(key: Key) -> SampleKey:
    """A dataset is indexed by `index` (epoch 0) or by the sampler's `(index, epoch[, shape])`."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), 0


def key_shape(key: Key) -> tuple[int, int, int] | None:
    """The (T, H, W) a dynamic batch asks of this sample, or None (the dataset's own)."""
    if isinstance(key, (tuple, list)) and len(key) > 2 and key[2] is not None:
        t, h, w = key[2]
        return int(t), int(h), int(w)
    return None


def with_index(key: Key, index: int, epoch: int) -> tuple:
    """`key` pointed at another sample (a child dataset's), keeping any requested shape."""
    shape = key_shape(key)
    return (index, epoch) if shape is None else (index, epoch, shape)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, index)."""
    # SeedSequence mixes the three words well, so neighbouring indices get unrelated streams.
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
