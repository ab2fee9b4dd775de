"""The run directory: where it is, who may write it, and what is written there first.

A run writes one directory (`run.dir`, default `runs/<run.name>`). This package settles it before
anything is written: the path is resolved and confined (`resolve_run_dir`), one process holds it
(`RunLock` in `lock.py`, an exclusive `flock` on `tubelet.lock` holding host, pid and start
time), and only after the recipe is validated and the resume decided does `commit` write
`config.yaml`. Beside it: atomic writes and "disk full" as one line (`atomic.py`), the repair of
`metrics.jsonl` on resume (`metrics_file.py`) and why a checkpoint does not load
(`load_errors.py`); their names are importable from `tubelet.rundir` as well.

It imports no torch and nothing above `registry`, so every layer may use it.
"""
from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tubelet.redact import redact_text
from tubelet.registry import ConfigError, value_kind
from tubelet.rundir.atomic import NoSpaceError, is_no_space, write_atomic  # noqa: F401
from tubelet.rundir.load_errors import load_reason  # noqa: F401
from tubelet.rundir.lock import LOCK_NAME, RunLock, in_use, read_holder
from tubelet.rundir.metrics_file import repair_metrics  # noqa: F401

log = logging.getLogger("tubelet")
# `resume:` values besides null and a checkpoint path (docs/resume.md)
RESUME_MODES = ("auto", "force", "restart")
MAX_NAME = 128  # run.name: a directory name, with room for the files tubelet writes beside it
# What marks a folder as a tubelet run (so it may be reused); anything else non-empty is refused.
RUN_MARKERS = (LOCK_NAME, "metrics.jsonl", "checkpoints")


# ---------------------------------------------------------------------------- where
def resolve_run_dir(run: dict[str, Any], *, cwd: Path | None = None) -> Path:
    """The run directory `run.dir` (default `runs/<run.name>`), checked without writing:
    `run.name` is one plain directory name, the dir is not the working directory (or above
    it), not a file, not a non-empty folder that is not a tubelet run, and writable."""
    cwd = Path.cwd() if cwd is None else cwd
    name = run.get("name")
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise ConfigError(f"run.name: expected a name, got {value_kind(name)}")
    name = str(name)
    bad = ("/" in name or "\\" in name or "\0" in name or name in (".", "..")
           or not name.strip() or name.startswith("-"))
    if bad:
        raise ConfigError(f"run.name: {name[:60]!r} must be one plain directory name under runs/ "
                          "(no '/', '..' or absolute path; use run.dir to put a run elsewhere)")
    if len(name) > MAX_NAME:
        raise ConfigError(f"run.name: {len(name)} characters, at most {MAX_NAME}")
    text = run.get("dir")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"run.dir: expected a path, got {value_kind(text)}")
    path = Path(text)
    if any(len(part.encode()) > 255 for part in path.parts):
        raise ConfigError(f"run.dir: a path component is longer than 255 bytes ({text[:60]}...)")
    full = (cwd / path).resolve()
    if full == cwd.resolve() or full in cwd.resolve().parents:
        raise ConfigError(f"run.dir: {text!r} is the working directory or above it; a run "
                          "writes config.yaml, log.txt and checkpoints/ there")
    check_usable(path, key="run.dir")
    return path


def check_usable(path: Path, *, key: str) -> None:
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{key}: {str(path)!r} is a file, not a directory")
    if path.is_dir():
        entries = {p.name for p in path.iterdir()}
        if entries and not entries & set(RUN_MARKERS):
            raise ConfigError(f"{key}: {str(path)!r} is a non-empty folder that is not a tubelet "
                              f"run (holds {', '.join(sorted(entries)[:3])}); choose another")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}: {str(path)!r} is not writable (read-only)")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}: {str(path)!r} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {str(path)!r} cannot be created: {parent} is not writable")


def check_free(run: dict[str, Any]) -> Path:
    """`resolve_run_dir`, and a run dir whose lock a running process holds refused at once:
    the CLI calls it before the heavy imports, so a second launch is answered in a second.
    (`RunDir.open` takes the lock for real later.)"""
    path = resolve_run_dir(run)
    _CHECKED[:] = [path]
    lock = path / LOCK_NAME
    if lock.is_file():
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(in_use(path, read_holder(fd))) from None
        except OSError:
            pass  # no locks on this filesystem: RunDir.open says so
        finally:
            os.close(fd)
    return path


# ---------------------------------------------------------------------------- what, when
class RunDir:
    """A locked run directory. `commit` writes the config once every check has passed; a run
    that ends before it wrote anything of value (a checkpoint or a metrics row) in a directory
    it created leaves nothing behind (`finish`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.created = not self.path.exists()
        # the folders this run creates above its own (`runs/`), removed with it when empty
        self._new_parents = [p for p in self.path.absolute().parents if not p.exists()]
        self.lock = RunLock(self.path)

    def open(self) -> "RunDir":
        for earlier in [r for r in _OPEN if r.path.resolve() == self.path.resolve()]:
            # this process built another run on the same dir before (in-process use): its
            # lock is ours already; a second flock on a new descriptor would refuse ourselves
            _OPEN.remove(earlier)
            earlier.lock.release()
            self.created = earlier.created
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"run.dir: cannot create {self.path} ({e.strerror})") from None
        try:
            self.lock.acquire()
        except BaseException:
            self._remove_if_empty()
            raise
        _OPEN.append(self)
        self._remove_stale_temps()
        return self

    def _remove_stale_temps(self) -> None:
        """Temp files of writers that were killed mid-write: never complete, never read."""
        for folder in (self.path, self.path / "checkpoints"):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                log.info("removing %s, left by an interrupted write", tmp)
                tmp.unlink(missing_ok=True)

    def commit(self, config_text: str) -> None:
        """Write `config.yaml`; a different previous one is kept as `config.<n>.yaml`."""
        path = self.path / "config.yaml"
        if path.is_file():
            if path.read_text() == config_text:
                return  # the same recipe: the file stays byte-identical
            n = 1
            while (self.path / f"config.{n}.yaml").exists():
                n += 1
            os.replace(path, self.path / f"config.{n}.yaml")
            log.info("the recipe changed; the previous one is kept as config.%d.yaml", n)
        write_atomic(path, config_text.encode())

    def finish(self, error: str | None = None) -> None:
        """Record a user error in `log.txt`, remove the directory if this process created it
        and wrote nothing of value there, and release the lock."""
        if self not in _OPEN:
            return
        _OPEN.remove(self)
        if self._worthless() and self.created:
            self.lock.release()
            self._remove_if_empty()
            return
        if error is not None:
            _append_error(self.path / "log.txt", error)
        self.lock.release()

    def _worthless(self) -> bool:
        ckpts = self.path / "checkpoints"
        has_ckpt = ckpts.is_dir() and any(p.suffix == ".pt" for p in ckpts.iterdir())
        metrics = self.path / "metrics.jsonl"
        # the list of unreadable files a data error points the user to is worth keeping
        return (not has_ckpt and not (metrics.is_file() and metrics.stat().st_size)
                and not any(self.path.glob("bad_files*.txt")))

    def _remove_if_empty(self) -> None:
        if not self.created:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        for parent in self._new_parents:
            try:
                parent.rmdir()  # only while empty: another run may have started there
            except OSError:
                break


_OPEN: list[RunDir] = []
_CHECKED: list[Path] = []  # the run dir `check_free` settled, before it is opened


def _append_error(log_txt: Path, error: str) -> None:
    try:
        with open(log_txt, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} ERROR error: {redact_text(error)}\n")
    except OSError:
        pass


def finish_all(error: str | None = None) -> None:
    """End the run dirs this process holds. With a user `error` (the CLI), end only the
    command's own run (the one `check_free` settled) and record the error in its log.txt,
    also when it failed before the run dir was opened (a recipe typo on a resume), unless
    another process holds that run. Without, end them all (at exit)."""
    if error is None:
        for run in list(_OPEN):
            run.finish()
        return
    if not _CHECKED:
        return
    path = _CHECKED.pop()
    mine = [r for r in _OPEN if r.path.resolve() == path.resolve()]
    if mine:
        mine[0].finish(error)
    elif (path / "log.txt").is_file():
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDONLY)
        except OSError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            _append_error(path / "log.txt", error)
        except OSError:
            pass  # in use by another run: its log is not ours to write
        finally:
            if fd is not None:
                os.close(fd)


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker) shares the lock's open file, and flock belongs to
    the open file: without this the lock outlives a SIGKILLed run for as long as its workers
    take to notice. Close the child's copy only (no unlock, no truncation: the parent holds
    it), and forget the run dirs (the child's exit must not end them)."""
    for run in _OPEN:
        if run.lock._fd is not None:
            try:
                os.close(run.lock._fd)
            except OSError:
                pass
            run.lock._fd = None
    _OPEN.clear()


atexit.register(finish_all)
os.register_at_fork(after_in_child=_forget_in_child)
