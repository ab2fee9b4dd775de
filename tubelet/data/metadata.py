"""The per-dataset metadata index: each video's frame count, fps and size (every `VideoInfo`
field), cached next to the annotations so that `__len__` and frame sampling never open a video.
A path that is a folder of images ("rawframes") is a video too: its frames are the images in
name order, its rate FRAMES_FPS, its size unknown (0) until decoded.

The file is an .npz of flat arrays (no pickle): the paths as one bytes buffer plus offsets, each
file's (size, mtime) and its `VideoInfo` row, and the probe errors. An entry is reused while the
file's size and mtime are unchanged, so a truncated or replaced file is probed again. A file
that cannot be probed is reported, not fatal: the dataset counts it as bad data and substitutes
another sample; its error is cached like a success, so a warm start does not probe it again.

One prober per node: a process that finds files to probe takes an exclusive lock on
`<index>.lock` first, then reads the index again. Other local ranks (or other jobs) block on the
lock and then find the index complete. The lock is released by the kernel when its holder exits,
so a prober that crashes lets the next waiter probe; where no lock can be taken (a read-only
directory) every process probes for itself. No process group is needed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from tubelet.data.decode import DecodeError, VideoInfo, probe
from tubelet.data.tables import PathTable, info_dtype

log = logging.getLogger("tubelet")
INDEX_VERSION = 3  # 1: JSON of per-path lists (2 was used for JSON too); 3: npz of flat arrays
PARALLEL_ABOVE = 64  # files; below this a pool costs more than it saves
STAT_DTYPE = np.dtype([("size", np.int64), ("mtime_ns", np.int64)])
MISSING, EMPTY = -2, 0  # `size` of a file that does not exist / has no bytes
T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    items = list(items)
    if len(items) <= PARALLEL_ABOVE:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(fn, items, chunksize=32))


FRAMES_FPS = 30.0  # assumed rate of a frame folder, which records none
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def frame_files(folder: Path) -> list[Path]:
    """The images of a frame folder ("rawframes"), in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _stat(path: bytes) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return MISSING, 0
    # A folder's size says nothing; -1 keeps it from reading as an empty file.
    return (-1 if os.path.isdir(path) else st.st_size), st.st_mtime_ns


def _probe(path: Path) -> VideoInfo | str:
    if path.is_dir():
        frames = frame_files(path)
        if not frames:
            return f"{path}: frame folder without images"
        return VideoInfo(num_frames=len(frames), fps=FRAMES_FPS, height=0, width=0)
    try:
        return probe(path)
    except DecodeError as err:
        return str(err)


class Index:
    """The cached entries: paths, (size, mtime), info rows and {row: probe error}."""

    def __init__(self, paths: PathTable, stats: np.ndarray, infos: np.ndarray,
                 errors: dict[int, str]) -> None:
        self.paths, self.stats, self.infos, self.errors = paths, stats, infos, errors

    @classmethod
    def empty(cls) -> Index:
        return cls(PathTable([]), np.zeros(0, STAT_DTYPE), np.zeros(0, info_dtype()), {})

    def rows_for(self, paths: PathTable) -> np.ndarray:
        """For each of `paths` its row here, or -1."""
        if self.paths.same_as(paths):  # the usual warm start: no per-path objects at all
            return np.arange(len(paths))
        rows = {self.paths.raw(i): i for i in range(len(self.paths))}
        return np.fromiter((rows.get(paths.raw(i), -1) for i in range(len(paths))),
                           dtype=np.int64, count=len(paths))


def read_index(index_file: Path) -> Index:
    """The index at `index_file`; empty when absent, unreadable, of another version or with
    other `VideoInfo` fields (so an old index is rebuilt, never misread)."""
    try:
        with np.load(index_file, allow_pickle=False) as z:
            if int(z["version"]) != INDEX_VERSION or z["infos"].dtype != info_dtype():
                return Index.empty()
            paths = PathTable.from_arrays(z["prefix"].tobytes(), z["buffer"], z["offsets"])
            errors = {int(k): v for k, v in json.loads(z["errors"].tobytes()).items()}
            return Index(paths, z["stats"], z["infos"], errors)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return Index.empty()


def write_index(index_file: Path, index: Index) -> None:
    """Atomic (temp file + rename), so concurrent readers never see half an index."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{index_file.name}.", dir=index_file.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, version=np.array(INDEX_VERSION),
                     prefix=np.frombuffer(index.paths.prefix, np.uint8),
                     buffer=index.paths.buffer, offsets=index.paths.offsets,
                     stats=index.stats, infos=index.infos,
                     errors=np.frombuffer(json.dumps(index.errors).encode(), np.uint8))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; other users' jobs read it too
        os.replace(tmp, index_file)
    except OSError as err:
        log.warning("cannot write the metadata index %s (%s); it is rebuilt on every start",
                    index_file, err)


@contextlib.contextmanager
def prober_lock(index_file: Path) -> Iterator[None]:
    """Hold `<index_file>.lock` exclusively; without a usable lock, go ahead unlocked."""
    try:
        fd = os.open(index_file.with_name(index_file.name + ".lock"), os.O_RDWR | os.O_CREAT,
                     0o666)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            start = time.monotonic()
            log.info("waiting for another process to finish probing for %s", index_file)
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("waited %.1f s for %s", time.monotonic() - start, index_file)
        except OSError as err:  # a file system without locks
            log.warning("cannot lock %s.lock (%s); probing without it", index_file, err)
        yield
    finally:
        os.close(fd)  # releases the lock


def _match(index: Index, paths: PathTable, stats: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """(each path's row in `index` or -1, whether that row is still valid for its file)."""
    rows = index.rows_for(paths)
    found = rows >= 0
    valid = np.zeros(len(paths), dtype=bool)
    valid[found] = index.stats[rows[found]] == stats[found]
    return rows, valid & _present(stats)


def _present(stats: np.ndarray) -> np.ndarray:
    return (stats["size"] != MISSING) & (stats["size"] != EMPTY)


def video_infos(paths: Sequence[Path] | PathTable, *, index_file: Path
                ) -> tuple[np.ndarray, dict[int, str]]:
    """(an `info_dtype()` row per path, {position: one-line error} for the paths that cannot
    be used). Rows of failed paths hold zeros."""
    table = paths if isinstance(paths, PathTable) else PathTable(paths)
    stats = np.array(parallel_map(_stat, [table.raw(i) for i in range(len(table))]),
                     dtype=np.int64).reshape(-1, 2).view(STAT_DTYPE).reshape(-1)
    index = read_index(index_file)
    rows, valid = _match(index, table, stats)
    probing = _present(stats)
    if np.any(probing & ~valid):
        with prober_lock(index_file):
            index = read_index(index_file)  # the lock's last holder may have just written it
            rows, valid = _match(index, table, stats)
            todo = np.flatnonzero(probing & ~valid)
            if len(todo):
                index = _probe_and_merge(index, table, stats, rows, valid, todo, index_file)
                rows, valid = _match(index, table, stats)
    infos = np.zeros(len(table), dtype=info_dtype())
    infos[valid] = index.infos[rows[valid]]
    errors = {}
    for i in np.flatnonzero(~valid | np.isin(rows, list(index.errors))):
        size = stats["size"][i]
        assert valid[i] or size in (MISSING, EMPTY), "every present file was probed"
        errors[int(i)] = (f"{table[i]}: no such file" if size == MISSING else
                          f"{table[i]}: empty file" if size == EMPTY else index.errors[rows[i]])
    return infos, errors


def _probe_and_merge(index: Index, table: PathTable, stats: np.ndarray, rows: np.ndarray,
                     valid: np.ndarray, todo: np.ndarray, index_file: Path) -> Index:
    """Probe `todo`, write and return the index: this dataset's entries first, then the kept
    entries of other paths (a train and a test split may share one index file)."""
    log.info("probing %d of %d videos for %s", len(todo), len(table), index_file)
    infos = np.zeros(len(table), dtype=info_dtype())
    infos[valid] = index.infos[rows[valid]]
    errors = {int(i): index.errors[rows[i]] for i in np.flatnonzero(valid)
              if rows[i] in index.errors}
    for i, info in zip(todo, parallel_map(_probe, [table[i] for i in todo])):
        if isinstance(info, VideoInfo):
            infos[i] = tuple(getattr(info, name) for name in infos.dtype.names)
        else:
            errors[int(i)] = info
    keep = np.ones(len(index.paths), dtype=bool)
    keep[rows[rows >= 0]] = False
    mine = _present(stats)
    kept = np.flatnonzero(keep)
    raw = [table.raw(i) for i in np.flatnonzero(mine)] + [index.paths.raw(i) for i in kept]
    offset = int(mine.sum())
    new_rows = np.cumsum(mine) - 1
    merged = Index(PathTable(raw), np.concatenate([stats[mine], index.stats[kept]]),
                   np.concatenate([infos[mine], index.infos[kept]]),
                   {**{int(new_rows[i]): e for i, e in errors.items()},
                    **{offset + k: index.errors[j] for k, j in enumerate(kept)
                       if j in index.errors}})
    write_index(index_file, merged)
    return merged
