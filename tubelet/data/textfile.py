"""Reading the text files a dataset names (annotation lists, CSVs, JSON label maps) with the
limits a recipe has: a regular file only (a FIFO would hang, a device read forever), a size
cap, and UTF-8 with an error that names file:line and never quotes the file."""
from __future__ import annotations

import stat
from pathlib import Path

from tubelet.registry import ConfigError

# Kinetics-700's train CSV is ~40 MB and SSv2's JSON ~30 MB; a list above this is a mistake.
MAX_ANNOTATION_BYTES = 1 << 30


def read_text(path: str | Path, *, max_bytes: int = MAX_ANNOTATION_BYTES) -> str:
    """The whole file as text; ConfigError ("file: ..." or "file:line: ...") otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise ConfigError(f"{path}: {kind}, expected a text file")
    if st.st_size > max_bytes:
        raise ConfigError(f"{path}: {st.st_size} bytes; an annotation file may have at most "
                          f"{max_bytes}")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte {raw[e.start]:#04x}); "
                          "save the file as UTF-8") from None
