"""`metrics.jsonl` made consistent with the checkpoint a run resumes from."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tubelet.rundir.atomic import write_atomic

log = logging.getLogger("tubelet")


def repair_metrics(path: Path, *, step: int) -> None:
    """Before a run appends at `step`: drop rows past `step` (the killed process logged them
    after its checkpoint), a torn last line and lines that are not tubelet rows, each with a
    warning. Rewritten (atomically) only when something is dropped."""
    if not path.is_file():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    kept, later, bad = [], 0, []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            ok = line.endswith(b"\n") and isinstance(row, dict) and isinstance(row.get("step"), int)
        except ValueError:
            ok = False
        if not ok:
            if line.strip():
                bad.append(i)
            continue
        if row["step"] > step:
            later += 1
            continue
        kept.append(line)
    if len(kept) == len(lines):
        return
    if not kept and not later and bad:  # no line is a tubelet row: someone else's file
        _set_aside(path)
        return
    if bad:
        log.warning("%s: dropped %d line(s) that are not complete metrics rows (line %s)",
                    path, len(bad), ", ".join(map(str, bad[:5])))
    if later:
        log.info("%s: dropped %d row(s) logged after step %d", path, later, step)
    write_atomic(path, b"".join(kept))


def _set_aside(path: Path) -> None:
    """Keep a file that is not this run's as `metrics.<n>.jsonl` (as RunDir.commit keeps a
    previous config.yaml): a run dir pointed at an existing folder loses nothing of it."""
    n = 1
    while path.with_name(f"{path.stem}.{n}{path.suffix}").exists():
        n += 1
    aside = path.with_name(f"{path.stem}.{n}{path.suffix}")
    path.replace(aside)
    log.warning("%s: no line is a tubelet metrics row; kept as %s", path, aside.name)
