"""The schema that `tubelet.validate` checks recipes against: every registered part's keyword
parameters (annotation source text, required, default) as plain JSON data, and its cache, so a
later run validates before importing torch. No torch here either."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tubelet.registry import _parameters

SCHEMA_VERSION = 1
Spec = dict[str, Any]  # {"params": {name: [annotation, required, default]}, "kwargs": bool, ...}


def describe(target: Any, *, runtime: tuple[str, ...] = ()) -> Spec:
    """A callable's keyword parameters as plain data: annotation source, required, default."""
    params, takes_kwargs = _parameters(target)
    out = {}
    for name, p in params.items():
        if name in runtime:
            continue
        ann = p.annotation
        text = "" if ann is p.empty else ann if isinstance(ann, str) else \
            inspect.formatannotation(ann)
        default = None if p.default is p.empty else _plain(p.default)
        out[name] = [text, p.default is p.empty, default]
    cls = getattr(target, "func", target)
    return {"params": out, "kwargs": takes_kwargs,
            "sets_size": bool(getattr(cls, "sets_size", False)),
            "layer_ids": callable(getattr(cls, "get_layer_id", None)),
            "grad_checkpointing": callable(getattr(cls, "set_grad_checkpointing", None)),
            "channels_last": getattr(cls, "channels_last_3d", False) is True}


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(x, (bool, int, float, str))
                                               for x in value):
        return list(value)
    return None


def cache_path() -> Path:
    """Where the schema cache lives: `$TUBELET_CACHE_DIR`, else the user's cache directory.
    Its name carries a fingerprint of the package's files and versions, so any change to
    tubelet (or torch) makes a new one; nothing is maintained by hand."""
    root = os.environ.get("TUBELET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tubelet")
    package = Path(__file__).resolve().parent
    h = hashlib.sha256(f"{SCHEMA_VERSION} {sys.version} {_version('torch')} {package}".encode())
    for f in sorted(package.rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(package)} {st.st_mtime_ns} {st.st_size}\n".encode())
    return Path(root) / f"schema-{h.hexdigest()[:20]}.json"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def cached_schema() -> dict[str, Any] | None:
    """The schema saved by an earlier run of this exact package, or None."""
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == SCHEMA_VERSION else None


def save_schema(schema: dict[str, Any]) -> None:
    """Write the cache atomically; a read-only or full disk only means the next run is slower."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(schema))
        os.replace(tmp, path)
    except OSError:
        pass
