"""`tubelet data check`: what a recipe's dataset holds, what is broken, and how fast it decodes.

Building the dataset already opens every annotation file (a malformed line is a ConfigError
naming file:line) and probes every video not yet in the metadata index; this adds per-class
counts, the list of missing and corrupt files, and the decode speed of a seeded sample of items.
With `--verify N` it also decodes N seeded files in full, in order (the definition of a frame
index, see data/decode.py) and compares the dataset's backend on a seeded set of single frames
and clips with it: a file whose frames differ, or that the backend refuses, is listed with its
container, codec and what is unusual about it (B-frames in AVI, variable rate, edit list ...).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

import torch
from rich.console import Console
from rich.table import Table

from tubelet.data.decode import UNTRUSTED_PTS, DecodeError, VideoInfo, decode_frames


def class_counts(dataset: Any) -> list[tuple[str, int]]:
    samples = getattr(dataset, "samples", None)
    classes = getattr(dataset, "classes", None)
    if not samples or classes is None:
        return []
    counts = collections.Counter(s.target for s in samples if isinstance(s.target, int))
    return [(name, counts.get(k, 0)) for k, name in enumerate(classes)]


def decode_speed(dataset: Any, *, num_items: int,
                 seed: int = 0) -> tuple[float, list[tuple[str, str]]]:
    """(items/s over a seeded sample of `num_items` items, (path, reason) found bad meanwhile)."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(dataset), generator=g)[:num_items].tolist()
    bad: list[tuple[str, str]] = []
    start = time.perf_counter()
    for i in picks:
        try:
            item = dataset[i]
        except DecodeError as err:  # every substitute failed too
            bad.append((str(err), str(err)))
            continue
        bad += [tuple(line.split("\t", 1)) for line in item.get("bad", "").split("\n") if line]
    elapsed = time.perf_counter() - start
    return len(picks) / max(elapsed, 1e-9), bad


def _probe_indices(num_frames: int, rng: np.random.Generator) -> list[list[int]]:
    """Single frames (first, last, random) and clips (contiguous, strided, scattered)."""
    singles = [[0], [num_frames - 1]] + [[int(k)] for k in rng.integers(0, num_frames, 6)]
    starts = rng.integers(0, num_frames, 3)
    clips = [list(range(s, min(num_frames, s + 8))) for s in starts]
    clips += [list(range(int(s), num_frames, 4))[:16] for s in starts]
    return singles + clips + [sorted(rng.integers(0, num_frames, 5).tolist())]


def verify_file(path: Path, info: VideoInfo, *, backend: str, seed: int = 0) -> str:
    """"exact", or one line: how the backend's frames differ from a full sequential decode."""
    requests = _probe_indices(info.num_frames, np.random.default_rng(seed))
    wanted = sorted({k for r in requests for k in r})
    # The definition itself: the PyAV path told that no timestamp can be trusted decodes
    # every frame from the start, in order (here to the end, to count them too).
    sequential = dataclasses.replace(info, traits=info.traits | UNTRUSTED_PTS,
                                     num_frames=2**62)
    try:
        reference = decode_frames(path, wanted, info=sequential).numpy()
    except DecodeError as err:
        return f"a full decode fails: {err}"
    ref = dict(zip(wanted, reference))
    for indices in requests:
        try:
            video = decode_frames(path, indices, backend=backend, info=info).numpy()
        except DecodeError as err:
            reason = str(err).removeprefix(f"{path}: ")
            return f"refused by {backend}: {reason.removeprefix(f'backend {backend!r} ')}"
        for k, frame in zip(indices, video):
            if frame.shape != ref[k].shape or not np.array_equal(frame, ref[k]):
                more = "..." if len(indices) > 4 else ""
                return f"DIFFERS at frame {k} (asked {indices[:4]}{more})"
    return "exact"


def _container_codec(path: Path, info: VideoInfo) -> tuple[str, str]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams[info.stream]
            return container.format.name.split(",")[0], stream.codec_context.name
    except (av.FFmpegError, IndexError):
        return "?", "?"


def verify(dataset: Any, *, name: str, num_files: int, console: Console, seed: int = 0) -> int:
    """Compare the dataset's decoder with a full sequential decode on `num_files` seeded files;
    prints one line per file and returns the number that differ or are refused."""
    infos, samples = getattr(dataset, "infos", None), getattr(dataset, "samples", None)
    if infos is None or samples is None:
        console.print(f"{name}: --verify: not a video-file dataset, nothing to verify")
        return 0
    files = [(s.path, info) for s, info in zip(samples, infos)
             if info is not None and not Path(s.path).is_dir()]
    files = list(dict((str(p), (p, i)) for p, i in files).values())  # one per file
    picks = np.random.default_rng(seed).permutation(len(files))[:num_files]
    backend = getattr(dataset, "backend", "pyav")
    num_bad = 0
    console.print(f"{name}: verifying {len(picks)} of {len(files)} files, backend {backend!r}, "
                  "against a full sequential decode")
    for i in picks:
        path, info = files[i]
        result = verify_file(path, info, backend=backend, seed=seed)
        container, codec = _container_codec(path, info)
        why = info.reasons() or "nothing unusual"
        line = f"  {path}: {result} [{container}, {codec}, {info.mode}: {why}]"
        num_bad += result != "exact"
        console.print(line, soft_wrap=True, highlight=False, markup=False,
                      style=None if result == "exact" else "red")
    console.print(f"{name}: {num_bad} of {len(picks)} verified files differ or are refused")
    return num_bad


def report(dataset: Any, *, name: str, num_items: int = 16, console: Console | None = None,
           verify_files: int = 0) -> int:
    """Print the tables for one dataset (and `verify_files` files verified); returns the number
    of bad files found."""
    console = console or Console()
    counts = class_counts(dataset)
    if counts:
        table = Table(title=f"{name}: {len(dataset)} items, {len(counts)} classes")
        table.add_column("class")
        table.add_column("items", justify="right")
        for cls, n in counts:
            table.add_row(cls, str(n), style="red" if n == 0 else None)
        console.print(table)
    else:
        console.print(f"{name}: {len(dataset)} items")
    speed, found = decode_speed(dataset, num_items=min(num_items, len(dataset)))
    bad = dict(getattr(dataset, "bad_files", []))
    for path, reason in found:
        bad.setdefault(path, reason)
    if bad:
        # Plain lines, not a table: paths are long, and a wrapped path cannot be copied.
        console.print(f"{name}: {len(bad)} missing or corrupt files:", style="red")
        for reason in bad.values():
            console.print(f"  {reason}", soft_wrap=True, highlight=False)
    else:
        console.print(f"{name}: no missing or corrupt files")
    console.print(f"{name}: {speed:.1f} items/s decoded and transformed (one process, "
                  f"{min(num_items, len(dataset))} seeded items)")
    if verify_files:
        return len(bad) + verify(dataset, name=name, num_files=verify_files, console=console)
    return len(bad)
