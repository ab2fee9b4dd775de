"""Atomic writes (a temp name, fsync, rename) and a full disk as one line (`NoSpaceError`):
a file in the run dir is either the old one or the new one, never half of each."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from tubelet.registry import ConfigError


class NoSpaceError(ConfigError):
    """The disk filled while writing; what was written is removed, earlier files are intact."""

    def __init__(self, path: str | Path, *, needed: int | None = None) -> None:
        path = Path(path)
        free = _free_bytes(path.parent)
        need = f"needs ~{_mb(needed)}, " if needed else ""
        super().__init__(f"no space left on device writing {path} ({need}{_mb(free)} free)")


def _mb(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.{2 if n < 10 * 2**20 else 0}f} MB"


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_no_space(error: BaseException | None) -> bool:
    """Whether `error`, or anything it was raised from, is ENOSPC / EDQUOT."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp name unique to this process, fsync, rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_no_space(e):
            raise NoSpaceError(path, needed=len(data)) from None
        raise
