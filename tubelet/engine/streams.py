"""Each rank's own global random stream (MAE/VideoMAE masks, drop-path, mixup λ and cutmix
boxes: everything not seeded per sample), and what a resume does with it.

- Start: every rank builds the model from `seed` (the same weights everywhere, which FSDP2
  needs: it shards what each rank initialised and broadcasts nothing). Then rank r > 0 reseeds
  with `seed + r`, as MAE's `seed + rank` and timm's `random_seed(seed, rank)`; rank 0 goes on
  with `seed`'s stream, so a single process draws exactly what it always did.
- Resume at the same world size: every rank restores its own saved stream: exact.
- Resume at another world size: rank r restores rank r's saved stream when the checkpoint has
  one; a rank it has none for starts a stream derived from (the saved streams, r, step), so the
  ranks still differ and the same resume twice draws the same numbers. The global batch is split
  differently over the ranks then, so global randomness cannot match an uninterrupted run at
  either world size; runs without global randomness still end within float noise.
- A checkpoint whose ranks all hold one stream (written before streams were per rank) gives
  ranks > 0 derived streams, as above.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from tubelet.engine.checkpoint import set_rng_state


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's (CPU and every CUDA device) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_rank_stream(seed: int, *, rank: int) -> None:
    """Call once the model is built: from here on rank r draws from `seed + r`."""
    if rank > 0:
        seed_all(seed + rank)


def _derived_seed(states: list[dict], rank: int, step: int) -> int:
    digest = hashlib.sha256(states[0]["torch"].numpy().tobytes()).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    high, low = np.random.SeedSequence([*words, rank, step]).generate_state(2, np.uint32)
    return int(high) << 32 | int(low)


def restore_rank_stream(states: list[dict], *, rank: int, world_size: int, step: int) -> str:
    """Set this rank's global RNGs from a checkpoint's per-rank states (see the module doc).
    Returns how: "own", "kept" (another world size, this rank's saved stream) or "derived"."""
    shared = len(states) > 1 and all(torch.equal(s["torch"], states[0]["torch"]) for s in states)
    if rank < len(states) and not (shared and rank > 0):
        set_rng_state(states[rank])
        return "own" if len(states) == world_size else "kept"
    set_rng_state(states[0])  # python/numpy/cuda layouts, then a fresh stream over them
    seed_all(_derived_seed(states, rank, step))
    return "derived"
