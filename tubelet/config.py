"""Recipes: YAML + a `base:` chain + dotted overrides + ${interpolation}, resolved to a plain dict.

This module imports no torch, so a typo in a recipe is answered before the heavy imports start.
Validation that needs the registries (every `type:`, every key against its target's signature)
lives in `tubelet.build`, which runs it before anything is constructed.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tubelet.registry import ConfigError, did_you_mean

# Top-level sections and, for the plain (non-`type:`) ones, their keys. The keys of `train`,
# `schedule` and `data` are checked against the signatures they feed in `tubelet.build`.
SECTIONS = {
    "base", "imports", "seed", "run", "resume", "checkpoint",
    "data", "model", "task", "optimizer", "schedule", "train", "hooks", "distributed",
}
RUN_KEYS = {"name", "dir"}


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader (so `!!python/...` and every other object-constructing tag is refused) that
    also reads YAML 1.2 floats: PyYAML's YAML 1.1 takes `1e-3` for a string, which no one
    writing `lr: 1e-3` means."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a recipe file") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: refused YAML tag ({e.problem}); recipes are data, "
                          "tags that construct objects are not allowed") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: base: cycle ({' -> '.join(p.name for p in seen + (path,))})")
    data = _read_yaml(path)
    base = data.pop("base", None)
    cfg = OmegaConf.create(data)
    if base is None:
        return cfg
    bases = base if isinstance(base, list) else [base]
    merged = OmegaConf.create({})
    for b in bases:
        # A base path is relative to the file that names it, so recipes move as a folder.
        parent = _load_chain(path.parent / str(b), seen + (path,))
        if isinstance(parent.get("run"), DictConfig):  # a run's identity is not inherited:
            for key in ("name", "dir"):  # it comes from the recipe run (or the command line)
                parent.run.pop(key, None)
        merged = OmegaConf.merge(merged, parent)
    return OmegaConf.merge(merged, cfg)  # deep merge; lists replace


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` with the value read as YAML (`3`, `1e-3`, `[1,2]`, `null`, `true`)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        parsed = yaml.load(value, Loader=_RecipeLoader) if value else ""  # noqa: S506
    except yaml.YAMLError:
        raise ConfigError(f"{key}: cannot read value {value!r} as YAML") from None
    return key, parsed


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Load a recipe, apply overrides, resolve interpolation, fill run defaults, check sections."""
    path = Path(path)
    cfg = _load_chain(path)
    for text in overrides:
        key, value = parse_override(text)
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{key}: cannot set ({_first_line(e)})") from None
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "config"
        raise ConfigError(f"{key}: {_first_line(e)}") from None
    check_sections(data)
    run = data.setdefault("run", {}) or {}
    data["run"] = run
    run.setdefault("name", path.stem)
    run.setdefault("dir", str(Path("runs") / str(run["name"])))
    data.setdefault("seed", 0)
    data.setdefault("resume", None)
    return data


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def check_sections(data: dict[str, Any]) -> None:
    """The cheap checks that need no registry: top-level and `run` keys."""
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{key}: unknown key{did_you_mean(key, SECTIONS)}")
    for key in data.get("run") or {}:
        if key not in RUN_KEYS:
            raise ConfigError(f"run.{key}: unknown key{did_you_mean(key, RUN_KEYS)}")
    for key in ("model", "task", "optimizer"):
        if key not in data:
            raise ConfigError(f"{key}: required section is missing")


def dump_config(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def config_hash(data: dict[str, Any]) -> str:
    """A short stable hash of the resolved recipe (ranks compare it; checkpoints record it)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
