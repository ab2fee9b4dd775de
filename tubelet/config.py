"""Recipes: YAML + a `base:` chain + dotted overrides + ${interpolation}, resolved to a plain dict.

This module imports no torch, so a typo in a recipe is answered before the heavy imports start.
Validation that needs the registries (every `type:`, every key against its target's signature)
lives in `tubelet.build`, which runs it before anything is constructed.
"""
from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tubelet.registry import ConfigError, did_you_mean, value_kind

# Top-level sections and, for the plain (non-`type:`) ones, their keys. The keys of `train`,
# `schedule` and `data` are checked against the signatures they feed in `tubelet.build`.
SECTIONS = {
    "base", "imports", "seed", "run", "resume", "checkpoint",
    "data", "model", "task", "optimizer", "schedule", "train", "hooks", "distributed",
    "trackers",
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


# Limits that keep a hostile or broken recipe from exhausting the machine: a recipe is read
# whole into memory, and a YAML alias can make a few bytes stand for an exponential tree.
MAX_RECIPE_BYTES = 1 << 20
MAX_NODES = 100_000  # scalars + containers after aliases are expanded
MAX_NESTING = 64  # YAML's composer recurses per level
MAX_BASE_DEPTH = 16  # `base:` chain length
MAX_RECIPE_FILES = 64  # files read through `base:` in all (a list of bases fans out)


def _read_yaml(path: Path) -> dict[str, Any]:
    text = read_recipe_text(path)
    _check_flow_nesting(text, path)
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_keys(node, path)
            _check_size(node, path)
            if (glued := _first_glued_key(node)) is not None:
                raise ConfigError(f"{path}:{glued.start_mark.line + 1}: {_glued_message(glued)}")
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{_where(path, e)}: refused YAML tag ({_redact(e.problem)}); recipes "
                          "are data, tags that construct objects are not allowed") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{_where(path, e)}: invalid YAML "
                          f"({_redact(getattr(e, 'problem', None) or type(e).__name__)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_NESTING} levels") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping, got {type(data).__name__}")
    return data


def read_recipe_text(path: Path) -> str:
    """The text of a recipe: a regular file (not a FIFO, device or directory) of at most
    MAX_RECIPE_BYTES, in UTF-8. Errors name the file, never its content."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path}: is a directory, expected a recipe file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: not a regular file (a FIFO, socket or device); "
                          "expected a recipe file")
    if st.st_size > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: {st.st_size} bytes; a recipe may have at most "
                          f"{MAX_RECIPE_BYTES} (1 MiB)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)  # the file may have grown since stat
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: a recipe may have at most {MAX_RECIPE_BYTES} bytes (1 MiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte {raw[e.start]:#04x}); "
                          "save the recipe as UTF-8") from None


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse a document whose expanded tree (aliases counted at every use) passes MAX_NODES
    or MAX_NESTING, before it is constructed: sizes are memoized per node, so an alias bomb
    is measured in the time of its few distinct nodes."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_NESTING:
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: nested deeper than "
                              f"{MAX_NESTING} levels")
        children = _children(node)
        if done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_NODES:
                raise ConfigError(f"{path}: more than {MAX_NODES} values once YAML aliases are "
                                  "expanded; a recipe is a small document")
        elif id(node) not in sizes:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def _check_keys(node: yaml.Node, path: Path) -> None:
    """A recipe's top-level keys are names. Anything else is not a recipe, and the error must
    not quote it: `base: /etc/shadow` would otherwise print the file's first line."""
    for key, _ in node.value if isinstance(node, yaml.MappingNode) else ():
        if not (isinstance(key, yaml.ScalarNode) and _NAME.fullmatch(str(key.value))):
            raise ConfigError(f"{path}:{key.start_mark.line + 1}: not a recipe (a top-level "
                              "key is not a name)")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _check_flow_nesting(text: str, path: Path) -> None:
    """PyYAML's scanner is quadratic in the nesting of `[`/`{`, so refuse deep flow
    collections before parsing (quoted strings and comments are skipped; the few recipes
    with many brackets pay one regex pass)."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return
    code = re.sub(r"'[^'\n]*'|\"(?:[^\"\\\n]|\\.)*\"|#[^\n]*", "", text)
    depth = 0
    for match in re.finditer(r"[\[\]{}]", code):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_NESTING:
            line = code.count("\n", 0, match.start()) + 1
            raise ConfigError(f"{path}:{line}: nested deeper than {MAX_NESTING} levels")


def _first_glued_key(root: yaml.Node) -> yaml.ScalarNode | None:
    """A plain key like `type:ema` with no value: YAML's reading of `{type:ema}`, a mapping
    whose colon lacks the space after it (easy to type in an override). Each distinct node
    is seen once, so an alias costs nothing."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, value in node.value if isinstance(node, yaml.MappingNode) else ():
            if (isinstance(key, yaml.ScalarNode) and key.style is None
                    and _GLUED.match(key.value)
                    and isinstance(value, yaml.ScalarNode) and value.value == ""):
                return key
        stack.extend(_children(node))
    return None


def _glued_message(key: yaml.ScalarNode) -> str:
    name, _, value = key.value.partition(":")
    return f"{key.value!r} is one key; put a space after the colon: {{{name}: {value}}}"


_GLUED = re.compile(r"[A-Za-z_]\w*:[^\s:]")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _where(path: Path, e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    return f"{path}:{mark.line + 1}" if mark else str(path)


def _redact(problem: str) -> str:
    """PyYAML quotes the offending token in its messages; drop it, so that an error about a
    file that is not a recipe (`base: /etc/shadow`) never prints a piece of it."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "...", str(problem))


def _load_chain(path: Path, seen: tuple[Path, ...] = (), budget: list[int] | None = None) -> Any:
    path = path.resolve()
    budget = [MAX_RECIPE_FILES] if budget is None else budget
    if path in seen:
        raise ConfigError(f"{path}: base: cycle ({' -> '.join(p.name for p in seen + (path,))})")
    if len(seen) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: base: chain deeper than {MAX_BASE_DEPTH} recipes")
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{path}: base: more than {MAX_RECIPE_FILES} recipe files in all")
    data = _read_yaml(path)
    base = data.pop("base", None)
    try:
        cfg = OmegaConf.create(data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {_first_line(e)}") from None
    if base is None:
        return cfg
    bases = base if isinstance(base, list) else [base]
    merged = OmegaConf.create({})
    for i, b in enumerate(bases):
        if not isinstance(b, str) or not b:
            where = "base" if base is b else f"base[{i}]"
            raise ConfigError(f"{path}: {where}: expected a recipe path, got "
                              f"{type(b).__name__}")
        # A base path is relative to the file that names it, so recipes move as a folder.
        parent = _load_chain(path.parent / b, seen + (path,), budget)
        if isinstance(parent.get("run"), DictConfig):  # a run's identity is not inherited:
            for key in ("name", "dir"):  # it comes from the recipe run (or the command line)
                parent.run.pop(key, None)
        merged = OmegaConf.merge(merged, parent)
    return OmegaConf.merge(merged, cfg)  # deep merge; lists replace


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` with the value read as YAML (`3`, `1e-3`, `[1,2]`, `null`, `true`)."""
    key, sep, value = text.partition("=")
    key = key.strip()  # "train.epochs = 3", quoted whole: the spaces are no part of the key
    if not sep or not key or any(not part or part != part.strip() or " " in part
                                 for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    if not value:
        return key, ""
    loader = _RecipeLoader(value)
    try:
        node = loader.get_single_node()
        glued = _first_glued_key(node) if node is not None else None
        if glued is not None:
            raise ConfigError(f"{key}: {_glued_message(glued)}")
        parsed = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError:
        raise ConfigError(f"{key}: cannot read value {value!r} as YAML") from None
    finally:
        loader.dispose()
    return key, parsed


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Load a recipe, apply overrides, resolve interpolation, fill run defaults, check sections."""
    path = Path(path)
    cfg = _load_chain(path)
    for text in overrides:
        key, value = parse_override(text)
        _check_indices(cfg, key)
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
    if run.get("name") is None:  # null is unset, as everywhere in a recipe (`run.dir: ~`)
        run["name"] = path.stem
    if run.get("dir") is None:
        run["dir"] = str(Path("runs") / str(run["name"]))
    data.setdefault("seed", 0)
    data.setdefault("resume", None)
    return data


def _check_indices(cfg: DictConfig, key: str) -> None:
    """`hooks[1].decay=...` needs a list with an item 1 there. On a null `hooks` OmegaConf made
    a mapping (refused later as "hooks: expected a list"), past the end it said "list index
    out of range"; an item cannot be appended this way."""
    for m in re.finditer(r"\[(\d+)\]", key):
        path, i = key[:m.start()], int(m.group(1))
        node = OmegaConf.select(cfg, path, default=None)
        size = len(node) if OmegaConf.is_list(node) else None
        if size is not None and i < size:
            continue
        if size is None and node is not None:
            raise ConfigError(f"{key}: {path} is not a list")
        has = "is null" if size is None else f"has {size} item{'s' * (size != 1)}"
        raise ConfigError(f"{key}: no item [{i}], {path} {has}; set the whole list instead: "
                          f"{path}=[...]")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def check_sections(data: dict[str, Any]) -> None:
    """The cheap checks that need no registry: top-level keys, their kinds, and `run` keys."""
    for key, value in data.items():
        if key not in SECTIONS:  # a section's key at the top (`epochs`, `lr`): its home
            from tubelet.validate_homes import unknown_top_level  # noqa: PLC0415 - error path
            raise unknown_top_level(key, value, sections=SECTIONS)
    for key in ("model", "task", "optimizer"):
        if key not in data:
            raise ConfigError(f"{key}: required section is missing")
    for key, value in data.items():
        expected = SECTION_KINDS.get(key)
        if expected is not None and not isinstance(value, expected):
            raise ConfigError(f"{key}: expected {_KIND_NAMES[expected]}, got "
                              f"{value_kind(value)}")
    for key in data.get("run") or {}:
        if key not in RUN_KEYS:
            raise ConfigError(f"run.{key}: unknown key{did_you_mean(key, RUN_KEYS)}")
    for key, value in (data.get("run") or {}).items():
        if value is not None and not isinstance(value, (str, int)) or isinstance(value, bool) \
                or value == "":
            raise ConfigError(f"run.{key}: expected a name or path, got {value_kind(value)}")
    for i, name in enumerate(data.get("imports") or []):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"imports[{i}]: expected a module name, got {value_kind(name)}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed: expected an integer in [0, 2**32), got {seed!r}"
                          if isinstance(seed, int) and not isinstance(seed, bool) else
                          f"seed: expected an integer, got {value_kind(seed)}")


_MAPPING, _MAYBE_MAPPING, _MAYBE_LIST, _MAYBE_STR = (dict,), (dict, type(None)), \
    (list, type(None)), (str, type(None))
SECTION_KINDS: dict[str, tuple[type, ...]] = {
    "model": _MAPPING, "task": _MAPPING, "optimizer": _MAPPING,
    "data": _MAYBE_MAPPING, "schedule": _MAYBE_MAPPING, "train": _MAYBE_MAPPING,
    "distributed": _MAYBE_MAPPING, "run": _MAYBE_MAPPING,
    "hooks": _MAYBE_LIST, "imports": _MAYBE_LIST, "checkpoint": _MAYBE_STR,
    "trackers": (dict, list, type(None)),  # {name: options} or [names] (tubelet/trackers.py)
}
_KIND_NAMES = {_MAPPING: "a mapping", _MAYBE_MAPPING: "a mapping", _MAYBE_LIST: "a list",
               _MAYBE_STR: "a path", (dict, list, type(None)): "a mapping or a list"}




def dump_config(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def config_hash(data: dict[str, Any]) -> str:
    """A short stable hash of the resolved recipe (ranks compare it; checkpoints record it)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
