"""Checkpoints: atomic save, keep-last-k, best, auto-resume with fallback, safe load.

Layout in `run_dir/checkpoints/`: `step_00000120.pt` files (the real data), `last.pt` and
`best.pt` as hard links to one of them, so "last" and "best" cost no extra write.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("tubelet")
_STEP_FILE = re.compile(r"^step_(\d{8,})\.pt$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_atomic(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s data: link to a temp name, then rename over `dst` (atomic)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # a filesystem without hard links: pay for a copy instead
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, *, step: int,
                    keep_last: int = 2, is_best: bool = False) -> Path:
    """Write `state` as `step_<step>.pt` atomically (temp file in the same directory, fsync,
    rename, fsync the directory), point `last.pt` (and `best.pt`) at it, and only then delete
    step files beyond the newest `keep_last` (best is kept through its own link)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:08d}.pt"
    tmp = ckpt_dir / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _link_atomic(path, ckpt_dir / "last.pt")
    if is_best:
        _link_atomic(path, ckpt_dir / "best.pt")
    _fsync_dir(ckpt_dir)
    for old in list_checkpoints(ckpt_dir)[keep_last:]:
        old.unlink()
    return path


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Step checkpoints, newest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`: a checkpoint is data, never code. No unsafe fallback."""
    return torch.load(path, map_location=map_location, weights_only=True)


def find_resumable(ckpt_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest step checkpoint that loads; a corrupt one is reported and skipped."""
    for path in list_checkpoints(ckpt_dir):
        try:
            return path, load_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - any failure to read means "not resumable"
            log.warning("checkpoint %s does not load (%s: %s); trying the previous one",
                        path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return None


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from, in a `weights_only`-loadable form."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "has_gauss": n["has_gauss"],
                         "gauss": n["gauss"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
