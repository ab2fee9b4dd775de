"""Where a misplaced recipe key belongs. Users from argparse scripts write `train.batch_size`,
`train.lr`, `train.warmup_epochs` or a top-level `grad_checkpointing`; each is a real key of
another section (`data.batch_size`, `optimizer.lr`, `schedule.warmup_epochs`,
`model.grad_checkpointing`), and a close name in the wrong section (`train.warmup_epochs`:
"did you mean 'epochs'?") sends them the wrong way. So the hint for an unknown key is the same
name in another section first, a close name in its own section second. Only on the error path;
no torch unless a top-level key needs the schema and no cached copy exists."""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from tubelet.config import RUN_KEYS
from tubelet.registry import ConfigError, did_you_mean
from tubelet.validate_switches import MODEL_BUILDER_KEYS

SECTIONS_WITH_KEYS = ("train", "data", "schedule", "distributed")


def homes(name: str, schema: dict[str, Any], *, optimizer_type: Any = None) -> list[str]:
    """Every full key named `name` outside the nodes: the sections' keys, `run.*`, the model
    builder's keys and the optimizer's (the recipe's optimizer, or any when it has none)."""
    sections = schema["sections"]
    found = [f"{s}.{name}" for s in SECTIONS_WITH_KEYS if name in sections[s]["params"]]
    found += [f"run.{name}"] * (name in RUN_KEYS) + [f"model.{name}"] * (name in MODEL_BUILDER_KEYS)
    optimizers = schema["registries"]["optimizer"]
    specs = [optimizers[optimizer_type]] if optimizer_type in optimizers else optimizers.values()
    if any(name in spec["params"] for spec in specs):
        found.append(f"optimizer.{name}")
    return found


def unknown_key(key: str, name: str, *, here: Iterable[str], schema: dict[str, Any],
                optimizer_type: Any = None) -> ConfigError:
    """`key` (ending in `name`) is not a key of its section or node, whose keys are `here`."""
    elsewhere = [h for h in homes(name, schema, optimizer_type=optimizer_type) if h != key]
    hint = f"; did you mean {elsewhere[0]!r}?" if elsewhere else did_you_mean(name, here)
    return ConfigError(f"{key}: unknown key{hint}")


def unknown_top_level(key: str, value: Any, *, sections: Iterable[str]) -> ConfigError:
    """A top-level `key` that is no section. A key of a section (`epochs`, `lr`) or a mapping
    of them (`log: {tensorboard: true}`) is pointed to its home; else the closest section."""
    schema = _schema()
    if schema is not None:
        names = [k for k in value if isinstance(k, str)] if isinstance(value, dict) else []
        for name, where in [(key, key)] + [(n, f"{key}.{n}") for n in names]:
            found = homes(name, schema)
            if found:
                return ConfigError(f"{where}: unknown key; did you mean {found[0]!r}?")
    hint = did_you_mean(key, sections)
    if not hint and schema is not None:  # a close name of a section key: `tensorbord`
        everywhere = {n: h for s in SECTIONS_WITH_KEYS for n in schema["sections"][s]["params"]
                      for h in [f"{s}.{n}"]}
        close = difflib.get_close_matches(key, list(everywhere), n=1, cutoff=0.8)
        hint = f"; did you mean {everywhere[close[0]]!r}?" if close else ""
    return ConfigError(f"{key}: unknown key{hint}")


def _schema() -> dict[str, Any] | None:
    """The cached schema, else built (imports torch: only for an error message), else None."""
    from tubelet import validate_schema  # noqa: PLC0415
    schema = validate_schema.cached_schema()
    if schema is not None:
        return schema
    try:
        from tubelet.build_check import schema as build_schema  # noqa: PLC0415
        return build_schema()
    except Exception:  # noqa: BLE001 - a broken install must not hide the recipe's own error
        return None
