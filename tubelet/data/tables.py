"""Flat per-video tables: paths, targets and annotation positions in a few numpy arrays.

Why: a dataset of Kinetics' 240k videos held as Python objects (a Path, a NamedTuple, an int
per video) costs ~2.4 KB per video, and every DataLoader worker that merely reads one of them
bumps its refcount, which writes to the page and copies it (copy-on-write): worker memory grows
through the epoch until each holds a private copy (PyTorch's "DataLoader memory grows" issue).
numpy arrays are a handful of objects whatever their length; reading an element never writes
to the array's pages. A row is turned into Python objects (`Sample`, `VideoInfo`) only when
asked for, and dropped after use.
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from tubelet.data.decode import VideoInfo


class Sample(NamedTuple):
    path: Path  # a video file, or the centre frame of a frame-folder clip
    target: Any  # int label, a float tensor, or None on an unlabelled split
    where: str  # "file:line" of the annotation, for error messages


class PathTable(Sequence[Path]):
    """Paths as one bytes buffer plus offsets, after a shared directory prefix stored once."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        encoded = [os.fsencode(p) for p in paths]
        # Up to the last "/" of the common byte prefix: a directory, never part of a name.
        common = os.path.commonprefix(encoded) if encoded else b""
        self.prefix = common[:common.rfind(b"/") + 1]
        cut = len(self.prefix)
        lengths = np.fromiter((len(p) - cut for p in encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths)
        # 4 bytes per offset while the buffer is under 4 GiB (always, short of ~40M videos)
        wide = len(ends) and ends[-1] >= 2 ** 32
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64 if wide else np.uint32)
        self.offsets[1:] = ends
        self.buffer = np.frombuffer(b"".join(p[cut:] for p in encoded), dtype=np.uint8)

    @classmethod
    def from_arrays(cls, prefix: bytes, buffer: np.ndarray, offsets: np.ndarray) -> PathTable:
        table = cls.__new__(cls)
        table.prefix, table.buffer, table.offsets = prefix, buffer, offsets
        return table

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        return self.prefix + self.buffer[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def __getitem__(self, i: int) -> Path:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return Path(os.fsdecode(self.raw(i % len(self))))

    def __iter__(self) -> Iterator[Path]:
        return (self[i] for i in range(len(self)))

    def same_as(self, other: PathTable) -> bool:
        """The same paths in the same order (compared as arrays, no per-path objects)."""
        return (self.prefix == other.prefix and np.array_equal(self.offsets, other.offsets)
                and np.array_equal(self.buffer, other.buffer))

    @property
    def nbytes(self) -> int:
        return len(self.prefix) + self.buffer.nbytes + self.offsets.nbytes


def at_line(path: str | os.PathLike) -> str:
    """The `where` template of a text annotation: "file:<line>"."""
    return os.fspath(path).replace("{", "{{").replace("}", "}}") + ":{line}"


def at_item(path: str | os.PathLike) -> str:
    """The `where` template of a JSON list: "file:[<position>]"."""
    return os.fspath(path).replace("{", "{{").replace("}", "}}") + ":[{line}]"


class SampleTable(Sequence[Sample]):
    """What a dataset knows of each sample, flat: `path`, `target` (int labels, float vectors,
    or none at all) and where it was annotated (`where` = a per-file template + a line number).
    Build one with `SampleTable.build`; index it like the list of `Sample`s it replaces."""

    def __init__(self, *, paths: PathTable, targets: np.ndarray | None, sources: list[str],
                 source_ids: np.ndarray, lines: np.ndarray) -> None:
        self.paths, self.targets = paths, targets
        self.sources, self.source_ids, self.lines = sources, source_ids, lines

    @classmethod
    def build(cls, rows: Sequence[tuple[Path, Any, str, int]]) -> SampleTable:
        """From (path, target, where template, line) rows. The template holds `{line}` and/or
        `{path}` ("train.txt:{line}", "train.json:[{line}]"). Targets are all ints, all float
        vectors or all None (an unlabelled split)."""
        sources: dict[str, int] = {}
        source_ids = np.fromiter((sources.setdefault(r[2], len(sources)) for r in rows),
                                 dtype=np.int32, count=len(rows))
        if len(sources) < 2 ** 16:  # a few annotation files (HMDB51: 51): 2 bytes a sample
            source_ids = source_ids.astype(np.uint16)
        lines = np.fromiter((r[3] for r in rows), dtype=np.int32, count=len(rows))
        kinds = {type(r[1]) for r in rows}
        if not rows or kinds == {type(None)}:
            targets = None
        elif kinds == {int}:
            targets = np.fromiter((r[1] for r in rows), dtype=np.int32, count=len(rows))
        else:
            assert kinds == {torch.Tensor}, f"mixed or unknown target types {kinds}"
            targets = torch.stack([r[1] for r in rows]).numpy()
        return cls(paths=PathTable([r[0] for r in rows]), targets=targets,
                   sources=list(sources), source_ids=source_ids, lines=lines)

    @property
    def labelled(self) -> bool:
        return self.targets is not None

    def __len__(self) -> int:
        return len(self.lines)

    def target(self, i: int) -> Any:
        if self.targets is None:
            return None
        if self.targets.ndim == 1:
            return int(self.targets[i])
        return torch.from_numpy(self.targets[i].copy())

    def where(self, i: int) -> str:
        template = self.sources[self.source_ids[i]]
        return template.format(line=int(self.lines[i]), path=self.paths[i])

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        path = self.paths[i]  # raises IndexError past the end, which ends iteration
        return Sample(path, self.target(i), self.where(i))

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        targets = 0 if self.targets is None else self.targets.nbytes
        return self.paths.nbytes + targets + self.source_ids.nbytes + self.lines.nbytes


_DTYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_}
# Narrower columns where the range is known: the index costs bytes per video in every rank.
_NARROW = {"num_frames": np.int32, "height": np.int32, "width": np.int32, "stream": np.int16,
           "rotation": np.int16, "traits": np.int32}


def info_dtype() -> np.dtype:
    """One column per `VideoInfo` field, so a scalar field added there is stored here too."""
    columns = []
    for f in fields(VideoInfo):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        assert kind in _DTYPES, (f"VideoInfo.{f.name}: type {kind!r} has no column type; add it "
                                 f"to tubelet/data/tables.py _DTYPES")
        columns.append((f.name, _NARROW.get(f.name, _DTYPES[kind])))
    return np.dtype(columns)


class InfoTable(Sequence["VideoInfo | None"]):
    """Each video's `VideoInfo` as one structured array; None for a video that is bad."""

    def __init__(self, array: np.ndarray, bad: np.ndarray) -> None:
        self.array, self.bad = array, bad

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> VideoInfo | None:  # type: ignore[override]
        if self.bad[i]:
            return None
        row = self.array[i]
        return VideoInfo(**{name: row[name].item() for name in self.array.dtype.names})

    def __iter__(self) -> Iterator[VideoInfo | None]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return self.array.nbytes + self.bad.nbytes
