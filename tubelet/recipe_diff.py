"""What a resume may change: the recipe a checkpoint recorded against this run's, key by key.

Keys that change what is trained refuse the resume (unless resume=force); keys that only
extend a run or change how it runs are allowed and said (docs/resume.md).
"""
from __future__ import annotations

import json
from typing import Any

# Keys a resume may change: they extend a run or change how it runs, not what it trains.
# A key is allowed when it, or a section above it, is listed. `data.batch_size` and
# `train.accum_steps` may change with the world size: the Trainer refuses a resume whose
# global batch (or, for `data.dynamic_batch`, whose plan of batches) differs, naming both
# (engine/resume.py: check_resumable).
RESUME_ALLOWED = (
    "train.epochs", "train.eval_interval", "train.checkpoint_interval", "train.log_interval",
    "train.keep_last", "train.progress", "train.tensorboard", "train.device", "train.threads",
    "train.nan_skip_limit", "train.accum_steps", "train.early_stop", "train.async_checkpoint",
    "data.batch_size", "data.dynamic_batch", "data.num_workers",
    "data.persistent_workers", "data.prefetch_factor", "data.max_bad_fraction",
    "data.val_batch_size", "data.test", "train.test_checkpoint", "resume", "run", "checkpoint",
    "distributed.timeout_s", "distributed.backend", "distributed.strategy", "trackers",
    # run switches: they change the float rounding, not the model or the data
    "model.grad_checkpointing", "train.compile", "train.channels_last",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(node, list) and node:
        out = {}
        for i, v in enumerate(node):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: node}


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value, default=str)


_UNSET = object()


def recipe_changes(saved: dict[str, Any] | None, now: dict[str, Any]
                   ) -> tuple[list[str], list[str]]:
    """(changes that alter what is trained, changes a resume may make), each as lines
    `optimizer.lr: 0.001 in the run, 0.002 now`, comparing the recipe a checkpoint recorded
    with this run's. A checkpoint without a record (older tubelet) compares as unchanged."""
    if saved is None:
        return [], []
    old, new = _flatten(saved), _flatten(now)
    refused, allowed = [], []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a == b and type(a) is type(b):
            continue
        line = f"{key}: {_show(a)} in the run, {_show(b)} now"
        ok = any(key == k or key.startswith((k + ".", k + "[")) for k in RESUME_ALLOWED)
        (allowed if ok else refused).append(line)
    return refused, allowed
