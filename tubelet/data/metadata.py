"""The per-dataset metadata index: each video's frame count, fps and size, cached in a JSON file
next to the annotations so that `__len__` and frame sampling never open a video. A path that is
a folder of images ("rawframes") is a video too: its frames are the images in name order, its
rate FRAMES_FPS, its size unknown (0) until decoded.

An entry is reused while the file's size and mtime are unchanged, so a truncated or replaced
file is probed again. Stat and probe run in a thread pool when files are many (FFmpeg releases
the GIL while it reads). A file that cannot be probed is reported, not fatal: the dataset counts
it as bad data and substitutes another sample.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from tubelet.data.decode import DecodeError, VideoInfo, probe

log = logging.getLogger("tubelet")
INDEX_VERSION = 2  # 2: VideoInfo gained stream, rotation, first_pts, traits (exact seeking)
PARALLEL_ABOVE = 64  # files; below this a pool costs more than it saves
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


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    # A folder's size says nothing; -1 keeps it from reading as an empty file.
    return (-1 if path.is_dir() else st.st_size), st.st_mtime_ns


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


def _read(index_file: Path) -> dict[str, list]:
    try:
        data = json.loads(index_file.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("version") == INDEX_VERSION else {}


def _write(index_file: Path, files: dict[str, list]) -> None:
    """Atomic (temp file + rename), so concurrent ranks never see half an index."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{index_file.name}.", dir=index_file.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": INDEX_VERSION, "files": files}, f)
        os.replace(tmp, index_file)
    except OSError as err:
        log.warning("cannot write the metadata index %s (%s); it is rebuilt on every start",
                    index_file, err)


def video_infos(paths: list[Path], *, index_file: Path) -> list[VideoInfo | str]:
    """For each path its `VideoInfo`, or a one-line error string when it cannot be used."""
    cached = _read(index_file)
    stats = parallel_map(_stat, paths)
    results: list[VideoInfo | str | None] = [None] * len(paths)
    todo = []
    for i, (path, st) in enumerate(zip(paths, stats)):
        entry = cached.get(str(path))
        if st is None:
            results[i] = f"{path}: no such file"
        elif st[0] == 0:
            results[i] = f"{path}: empty file"
        elif entry is not None and entry[:2] == list(st):
            results[i] = VideoInfo(*entry[2:])
        else:
            todo.append(i)
    if todo:
        log.info("probing %d of %d videos for %s", len(todo), len(paths), index_file)
        for i, info in zip(todo, parallel_map(_probe, [paths[i] for i in todo])):
            results[i] = info
    # Merge, so a train and a test split that share one index file do not undo each other.
    files = dict(cached)
    for p, st, r in zip(paths, stats, results):
        if isinstance(r, VideoInfo):
            files[str(p)] = [*st, *dataclasses.astuple(r)]
        else:
            files.pop(str(p), None)
    if files != cached:
        _write(index_file, files)
    return results  # type: ignore[return-value]
