"""Who may write a run dir: one process, holding an exclusive `flock` on `tubelet.lock`."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
LOCK_NAME = "tubelet.lock"


class RunLock:
    """One writer per run dir: an exclusive `flock` on `tubelet.lock`, which holds the
    holder's host, pid and start time. The kernel drops the lock when the process dies
    (SIGKILL included), so a lock file whose lock is free names a dead holder: it is taken
    over, with a line saying so. On a clean exit the file is emptied and unlocked."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"run.dir: cannot write in {self.path.parent} "
                              f"({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise ConfigError(in_use(self.path.parent, holder)) from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a filesystem without locks (docs/resume.md)
            log.warning("run.dir: %s does not support file locks (%s); a second run on this "
                        "directory will not be stopped", self.path.parent, e.strerror)
        previous = read_holder(fd)
        if previous:
            log.warning("run.dir: taking over the lock of %s, which is no longer running",
                        previous)
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file: the run ended cleanly
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def read_holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return ""
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']} (started {h['started']})"
    except (ValueError, KeyError, TypeError):
        return f"another process ({text[:80]!r})"


def in_use(path: Path, holder: str) -> str:
    return (f"run.dir: {path} is in use by {holder or 'another process that is starting'}; one "
            "process writes a run at a time (wait for it, stop it, or choose another run.name)")
