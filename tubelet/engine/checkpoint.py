"""Checkpoints: atomic, checksummed save, keep-last-k, best, a resume fallback that always
makes progress, and safe loading with the real reason when a file does not load.

Layout in `run_dir/checkpoints/`: `step_00000120.pt` files (the real data), `last.pt` and
`best.pt` as hard links to one of them, so "last" and "best" cost no extra write. Each file has
a `NAME.sha256` sidecar in `sha256sum` format (`sha256sum -c step_00000120.pt.sha256` checks
it by hand), committed before the data is renamed into place: a checkpoint whose bytes do not
match its digest (a torn copy, a flipped bit) is treated like an unreadable one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tubelet.registry import ConfigError
from tubelet.rundir import NoSpaceError, is_no_space, load_reason

log = logging.getLogger("tubelet")
_STEP_FILE = re.compile(r"^step_(\d{8,})\.pt$")
DIGEST_SUFFIX = ".sha256"
CORRUPT_DIR = "corrupt"  # checkpoints/corrupt/: files resume=auto could not use, moved aside
_CHUNK = 1 << 22


class CheckpointError(ConfigError):
    """A checkpoint that does not load; `reason` says why in a few words (no advice to load
    it unsafely)."""

    def __init__(self, path: str | Path, reason: str, *, key: str | None = None) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{key + ': ' if key else ''}{path}: {reason}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp(path: Path) -> Path:
    """A temp name unique to this writer, so two writers never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_digest(path: Path, digest: str) -> None:
    """Commit `path`'s digest (before `path` itself appears under that name)."""
    side, tmp = _sidecar(path), _tmp(_sidecar(path))
    with open(tmp, "w") as f:
        f.write(f"{digest}  {path.name}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, side)


class _ErrorKeepingWriter:
    """A file object for torch.save that keeps the OSError a write raised (torch wraps it in
    an opaque RuntimeError)."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _stage_link(src: Path, dst: Path, digest: str) -> Path:
    """A temp name holding `src`'s data (a hard link, or a copy where links fail), with
    `dst`'s digest already committed: the caller renames it over `dst`. Until then the old
    `dst` still verifies through the step file it is a link to."""
    tmp = _tmp(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # a filesystem without hard links: pay for a copy instead
        tmp.write_bytes(src.read_bytes())
    _write_digest(dst, digest)
    return tmp


def _state_bytes(state: Any) -> int:
    if torch.is_tensor(state):
        return state.nelement() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _write_temp(state: dict[str, Any], tmp: Path) -> str:
    """`state` into `tmp`, fsynced; returns its sha256.

    The sha256 is read back from the page cache while the fsync waits for the disk, so the
    hash costs CPU time only where the save was waiting anyway (hashing each chunk while
    torch wrote it made two CPU-bound passes compete for the same cores). torch's own CRC32
    per zip record is off for this write: the sha256 sidecar is the integrity check
    (verified before every resume), the CRC was a further pass over every byte (~0.6 s per
    GiB here, 0.65 s of a 1.1 GiB ViT-L save's 1.9), and torch.load does not read it. A
    `unzip -t` of a checkpoint then reports CRC errors; `sha256sum -c` is the check
    (docs/resume.md)."""
    writer = None
    crc32 = torch.serialization.get_crc32_options()
    try:
        with open(tmp, "wb") as f:
            writer = _ErrorKeepingWriter(f)
            torch.serialization.set_crc32_options(False)
            try:
                torch.save(state, writer)
            finally:
                torch.serialization.set_crc32_options(crc32)
            f.flush()
            with ThreadPoolExecutor(1, "tubelet-fsync") as pool:
                synced = pool.submit(os.fsync, f.fileno())
                try:
                    digest = _file_digest(tmp)
                finally:
                    synced.result()  # raises the fsync's OSError (a full disk, EIO)
    except BaseException as e:
        if writer is not None and writer.error is not None and not is_no_space(e):
            raise writer.error from None  # the real OSError, not torch's wrapper
        raise
    return digest


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, *, step: int,
                    keep_last: int = 2, is_best: bool = False) -> Path:
    """Write `state` as `step_<step>.pt` atomically, point `last.pt` (and `best.pt`) at it,
    and only then delete older step files beyond the newest `keep_last` (best is kept
    through its own link). Files of a later step (an abandoned branch) are never counted:
    the checkpoint just written is never deleted.

    Everything is staged under temp names first (data fsynced, digests committed), then
    renamed into place back to back, so a kill leaves `last.pt` behind its step file for
    microseconds only. A full disk removes the temp files and raises `NoSpaceError`."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:08d}.pt"
    tmp = _tmp(path)
    staged: list[tuple[Path, Path]] = []
    try:
        digest = _write_temp(state, tmp)
        _write_digest(path, digest)
        for name in ("last.pt", "best.pt") if is_best else ("last.pt",):
            staged.append((_stage_link(tmp, ckpt_dir / name, digest), ckpt_dir / name))
    except BaseException as e:
        for t in [tmp, *(t for t, _ in staged)]:
            t.unlink(missing_ok=True)
        if is_no_space(e):
            # the previous checkpoint's size is the best estimate; else the tensors' bytes
            previous = [p.stat().st_size for p in list_checkpoints(ckpt_dir)[:1]]
            raise NoSpaceError(path, needed=max(previous or [_state_bytes(state)])) from None
        raise
    os.replace(tmp, path)
    for t, dst in staged:
        os.replace(t, dst)
    _fsync_dir(ckpt_dir)
    older = [p for p in list_checkpoints(ckpt_dir) if step_of(p) < step]
    for old in older[max(keep_last - 1, 0):]:
        old.unlink()
        _sidecar(old).unlink(missing_ok=True)
    return path


def step_of(path: Path) -> int:
    return int(_STEP_FILE.match(path.name).group(1))


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Step checkpoints, newest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _recorded_digests(path: Path) -> set[str]:
    """The digests recorded for `path`: its own sidecar, and (for a `last.pt` relinked but
    killed before its sidecar followed) the sidecars of step files that are the same file."""
    found = set()
    candidates = [path]
    if path.stat().st_nlink > 1:
        candidates += [p for p in list_checkpoints(path.parent)
                       if p != path and os.path.samefile(p, path)]
    for p in candidates:
        try:
            found.add(_sidecar(p).read_text().split()[0])
        except (OSError, IndexError):
            pass
    return found


def verify_checkpoint(path: Path) -> bool:
    """Raise CheckpointError when `path`'s bytes differ from its recorded digest. Returns
    whether a digest was there to check (foreign and older files have none)."""
    if not _sidecar(path).exists() and path.stat().st_nlink == 1:
        return False
    recorded = _recorded_digests(path)
    if not recorded:
        return False
    actual = _file_digest(path)
    if actual not in recorded:
        raise CheckpointError(path, f"checksum mismatch (sha256 {actual[:12]}... but "
                                    f"{_sidecar(path).name} records {sorted(recorded)[0][:12]}...): "
                                    "the file is corrupt (a torn write or copy, or flipped bits)")
    return True


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu",
                    key: str | None = None) -> dict[str, Any]:
    """Verify the recorded digest, then load with `weights_only=True`: a checkpoint is data,
    never code, and there is no unsafe fallback. Any failure is a `CheckpointError` with the
    real reason (a user error: exit 2 when the file was named on the command line)."""
    path = Path(path)
    try:
        verify_checkpoint(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError as e:
        raise CheckpointError(path, e.reason, key=key) from None
    except Exception as e:  # noqa: BLE001 - every failure to read means "does not load"
        raise CheckpointError(path, load_reason(e), key=key) from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a checkpoint dict",
                              key=key)
    return state


def model_mismatch(saved: dict[str, Any], expected: dict[str, torch.Size]) -> str | None:
    """Why a saved model state dict does not fit a model with `expected` (name -> shape), or
    None: caught here, before load_state_dict turns it into a traceback."""
    if not isinstance(saved, dict):
        return "holds no model state dict"
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    shapes = [f"{k} {tuple(saved[k].shape)} in the file, {tuple(s)} now" for k, s in expected.items()
              if k in saved and torch.is_tensor(saved[k]) and tuple(saved[k].shape) != tuple(s)]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", extra)):
        if keys:
            parts.append(f"{len(keys)} {what} key(s) ({', '.join(keys[:3])}"
                         f"{', ...' if len(keys) > 3 else ''})")
    if shapes:
        parts.append(f"{len(shapes)} shape(s) differ ({'; '.join(shapes[:2])})")
    return f"another model: {', '.join(parts)}" if parts else None


def resume_candidates(ckpt_dir: Path) -> list[Path]:
    """Step files newest first, after `last.pt` when it is not one of them: a copy that broke
    the hard links (or a filesystem without them) keeps the newest save's data there."""
    steps = list_checkpoints(ckpt_dir)
    last = ckpt_dir / "last.pt"
    if last.is_file() and not any(os.path.samefile(last, p) for p in steps):
        steps.insert(0, last)
    return steps


def find_resumable(ckpt_dir: str | Path, *,
                   check: Callable[[dict[str, Any]], str | None] | None = None
                   ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, passes its checksum and `check` (which returns why a
    state does not fit this run, or None). Files newer than it that failed are reported with
    their reason and moved to `checkpoints/corrupt/`, so keep-last never deletes a good
    checkpoint to keep a bad one. None when there is no checkpoint at all; a ConfigError
    listing every file and reason when there are some but none loads (nothing is moved)."""
    ckpt_dir = Path(ckpt_dir)
    failed: list[tuple[Path, str]] = []
    for path in resume_candidates(ckpt_dir):
        try:
            state = load_checkpoint(path)
            reason = check(state) if check else None
        except CheckpointError as e:
            reason = e.reason
        if reason is None:
            last = ckpt_dir / "last.pt"
            for bad, why in failed:
                if bad != last and last.is_file() and os.path.samefile(last, bad):
                    last.unlink()  # the next save links it again; the data goes aside below
                    _sidecar(last).unlink(missing_ok=True)
                log.warning("checkpoint %s does not load (%s); moved to %s, resuming from "
                            "an older one", bad, why, move_aside(bad))
            return path, state
        failed.append((path, reason))
    if not failed:
        return None
    listing = "; ".join(f"{p.name}: {why}" for p, why in failed)
    raise ConfigError(f"resume: none of the {len(failed)} checkpoints in {ckpt_dir} loads "
                      f"({listing}); resume=restart starts over (it moves them aside)")


def move_aside(path: Path, *, folder: str = CORRUPT_DIR) -> Path:
    """Move a checkpoint (and its digest) into `checkpoints/<folder>/`, never overwriting."""
    dest_dir = path.parent / folder
    dest_dir.mkdir(exist_ok=True)
    dest, n = dest_dir / path.name, 1
    while dest.exists():
        dest, n = dest_dir / f"{path.stem}.{n}{path.suffix}", n + 1
    os.replace(path, dest)
    if _sidecar(path).exists():
        os.replace(_sidecar(path), _sidecar(dest))
    return dest


def set_aside_all(ckpt_dir: Path, *, metrics: Path | None = None) -> Path:
    """resume=restart: move every checkpoint (and the run's metrics.jsonl) into
    `checkpoints/previous_<n>/`, so the new run starts clean and nothing is lost."""
    n = 1
    while (ckpt_dir / f"previous_{n}").exists():
        n += 1
    dest = ckpt_dir / f"previous_{n}"
    dest.mkdir(parents=True)
    for path in sorted(ckpt_dir.iterdir()):
        if path.is_file() and (path.suffix == ".pt" or path.name.endswith(".pt" + DIGEST_SUFFIX)):
            os.replace(path, dest / path.name)
    if metrics is not None and metrics.exists():
        os.replace(metrics, dest / metrics.name)
    return dest


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
