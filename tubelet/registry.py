"""Closed registries: a recipe's `type:` resolves only to a name registered here.

There is no dotted-path instantiation on purpose: a recipe is data, and data must not be able to
import and call arbitrary code. Plugins make themselves known through a recipe's `imports:` list.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable


class ConfigError(ValueError):
    """A user error in a recipe or on the command line; the CLI prints it as one line, exit 2."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    best = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {best[0]!r}?" if best else ""


@dataclass(frozen=True)
class Range:
    """A value constraint: `lo <= x <= hi` (`<` at an open end). On a list, every number in it.
    Use it in a signature as `depth: Annotated[int, Min(1)]`, or in `tubelet.validate.RANGES`."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, x: float) -> str | None:
        """None when `x` is in range, else what it must be."""
        if (self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo))) or \
                (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi))):
            return f"must be {self}"
        return None

    def __str__(self) -> str:
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        if lo and hi:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        return lo or hi or "any number"


@dataclass(frozen=True)
class OneOf:
    """A value constraint: one of `choices` (strings, booleans, None)."""
    choices: tuple[Any, ...]

    def problem(self, x: Any) -> str | None:
        if x in self.choices and all(type(x) is type(c) for c in self.choices if c == x):
            return None
        names = [c for c in self.choices if isinstance(c, str)]
        hint = did_you_mean(x, names) if isinstance(x, str) else ""
        return f"unknown {x!r}; choose one of {list(self.choices)}{hint}"


def value_kind(value: Any) -> str:
    """How an error describes a recipe value: its YAML kind, and the value when it is short."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 40):
        return f"{kind} {value!r}"
    return kind


def not_a_node(value: Any, *, key: str) -> ConfigError:
    """The error for a `{type: name, ...}` node that is not one."""
    return ConfigError(f"{key}: expected a mapping with a 'type' key, got {value_kind(value)}")


def Min(lo: float) -> Range:  # noqa: N802 - reads as a type annotation
    return Range(lo=lo)


def Gt(lo: float) -> Range:  # noqa: N802
    return Range(lo=lo, lo_open=True)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and not math.isinf(x) else repr(x)


class Registry:
    """A name -> callable table. Callables are classes, functions or `functools.partial`s
    (a partial is how a model size such as `vit_small_patch16_224` is registered)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, obj)
            return obj
        return decorator

    def add(self, name: str, obj: Callable[..., Any]) -> None:
        assert name not in self._entries, f"{self.name}: {name!r} registered twice"
        self._entries[name] = obj

    def get(self, name: str, *, key: str = "type") -> Callable[..., Any]:
        if name not in self._entries:
            raise ConfigError(f"{key}: unknown {self.name} {name!r}{did_you_mean(name, self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def _parameters(target: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters of `target` and whether it also takes **kwargs."""
    if isinstance(target, functools.partial):
        sig = inspect.signature(target)
    else:
        sig = inspect.signature(target.__init__ if inspect.isclass(target) else target)
    params = {n: p for n, p in sig.parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return params, takes_kwargs


def check_kwargs(target: Callable[..., Any], kwargs: Iterable[str], *, key: str,
                 runtime: Iterable[str] = ()) -> None:
    """Check keys against `target`'s signature before anything is built: unknown keys and
    missing required arguments become one-line ConfigErrors naming the dotted key."""
    params, takes_kwargs = _parameters(target)
    given = set(kwargs) | set(runtime)
    if not takes_kwargs:
        for k in kwargs:
            if k not in params:
                raise ConfigError(f"{key}.{k}: unknown key{did_you_mean(k, params)}")
    for n, p in params.items():
        if p.default is p.empty and n not in given:
            raise ConfigError(f"{key}.{n}: required key is missing")


def validate(node: Any, registry: Registry, *, key: str, runtime: Iterable[str] = ()) -> None:
    """Validate one `{type: name, **kwargs}` node without building it."""
    if not isinstance(node, dict) or "type" not in node:
        raise not_a_node(node, key=key)
    target = registry.get(node["type"], key=f"{key}.type")
    check_kwargs(target, [k for k in node if k != "type"], key=key, runtime=runtime)


def build(node: dict[str, Any], registry: Registry, **runtime_kwargs: Any) -> Any:
    """Build `{type: name, **kwargs}` from `registry`; runtime objects (params, transform, ...)
    come as keyword arguments, so a recipe never has to describe them."""
    kwargs = {k: v for k, v in node.items() if k != "type"}
    return registry.get(node["type"])(**kwargs, **runtime_kwargs)


# The registries live on the bottom floor so every layer can register without importing upward.
MODELS = Registry("model")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
TASKS = Registry("task")
OPTIMIZERS = Registry("optimizer")
HOOKS = Registry("hook")
