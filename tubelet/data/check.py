"""`tubelet data check`: what a recipe's dataset holds, what is broken, and how fast it decodes.

Building the dataset already opens every annotation file (a malformed line is a ConfigError
naming file:line) and probes every video not yet in the metadata index; this adds per-class
counts, the list of missing and corrupt files, and the decode speed of a seeded sample of items.
"""
from __future__ import annotations

import collections
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from tubelet.data.decode import DecodeError


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


def report(dataset: Any, *, name: str, num_items: int = 16, console: Console | None = None) -> int:
    """Print the tables for one dataset; returns the number of bad files found."""
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
    return len(bad)
