"""Full validation of a resolved recipe (a plain dict), before anything is built or written.

The checks run on a *schema*: for every registered part (and the `train:`, `data:`, ...
sections) its keyword parameters with their annotations and defaults, as plain JSON data.
`tubelet.build.schema()` makes it from the live registries (importing torch and every part);
`tubelet.validate_schema.cached_schema()` reads the copy that the last such run saved, so
`tubelet config|train|eval|data check` answer a recipe error before torch is imported. The same
`check_recipe` runs on either, so the two paths cannot disagree.

Per node: `type` names a registered part, every key is a parameter, required ones are present,
each value has its annotated type (`depth: int` refuses 2.5, a `float` must be finite) and lies in
its range (`RANGES` by parameter name, or an `Annotated[int, Min(1)]` in the signature), paths
that must exist do, and nested nodes (`NODES`) are checked the same way. Across nodes
(`tubelet.validate_cross`): the transforms' output size and the clip length against the model,
`num_classes` of model, task and dataset, `layer_decay` only where the model has layer ids,
`train.best_metric` among the task's metrics, one of `optimizer.lr`/`blr`.
This module imports no torch.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

from tubelet import trackers
from tubelet.rundir import RESUME_MODES
from tubelet.registry import (ConfigError, Gt, Min, OneOf, Range, did_you_mean, not_a_node,
                              value_kind)
from tubelet.validate_homes import unknown_key
from tubelet.validate_schema import Spec
from tubelet.validate_switches import MODEL_BUILDER_KEYS, check_switches

# Arguments the builder passes itself: never recipe keys.
RUNTIME = {"dataset": ("transform", "to_float"), "head": ("in_features",),
           "optimizer": ("params",)}

# Parameters that hold nodes: (owner kind, name) -> the kind of node; "[]" a list of them;
# "@name" a plain section of the schema. Top-level dataset nodes also take device_transforms.
NODES = {("model", "backbone"): "model", ("model", "head"): "head", ("model", "neck"): "neck",
         ("dataset", "datasets"): "dataset[]", ("dataset", "dataset"): "dataset",
         ("task", "mixup"): "@mixup", ("data", "train"): "split", ("data", "val"): "split",
         ("data", "test"): "split",
         ("data", "dynamic_batch"): "@dynamic_batch", ("train", "early_stop"): "@early_stop"}

# Ranges and choices by parameter name; "kind.name" and "kind.type.name" are more specific.
# DESIGN.md's standard names make a name mean one thing across parts, which this relies on.
_POS, _NONNEG, _UNIT, _PROB_OPEN = Min(1), Min(0), Range(0, 1), Range(0, 1, hi_open=True)
RANGES: dict[str, Range | OneOf] = {
    # models
    "img_size": _POS, "patch_size": _POS, "in_chans": _POS, "embed_dim": _POS, "depth": _POS,
    "num_heads": _POS, "mlp_ratio": Gt(0), "init_values": Gt(0), "drop_rate": _PROB_OPEN,
    "attn_drop_rate": _PROB_OPEN, "drop_path_rate": _PROB_OPEN, "head_drop_rate": _PROB_OPEN,
    "dropout": _PROB_OPEN, "num_frames": _POS, "tubelet_size": _POS, "decoder_embed_dim": _POS,
    "decoder_depth": _POS, "decoder_num_heads": _POS, "mask_ratio": _PROB_OPEN,
    "layers": _POS, "base_width": _POS, "hidden_features": _POS, "num_classes": _NONNEG,
    "head.num_classes": _POS, "task.num_classes": _POS, "mixup.num_classes": _POS,
    # the synthetic set's motions: 8 directions x 2 speeds (tubelet.data.synth.motion_classes)
    "dataset.synthetic_actions.num_classes": Range(2, 16),
    "global_pool": OneOf(("token", "avg")), "pos_embed": OneOf(("learn", "sincos", "sincos2d")),
    "qkv_bias": OneOf((True, False, "qv")), "mask_type": OneOf((None, "tube", "random")),
    "block": OneOf(("basic", "bottleneck")), "activation": OneOf(("gelu", "relu", "none")),
    # datasets and transforms
    "stride": _POS, "target_fps": Gt(0), "temporal_views": _POS, "spatial_crops": _POS,
    "repeat": _POS, "times": _POS, "seed": Range(0, 2**32 - 1), "data_seed": Range(0, 2**32 - 1),
    "num_train_per_class": _POS, "num_test_per_class": _POS, "video_frames": _POS,
    "size": _POS, "fps": Gt(0), "split": _POS, "flip": _UNIT, "weights": _NONNEG,
    "num_samples": _POS, "sampling": OneOf(("interval", "segment")),
    "backend": OneOf(("pyav", "torchcodec", "decord")), "std": Gt(0), "p": _UNIT,
    "scale": Range(0, 1, lo_open=True), "ratio": Gt(0), "max_tries": _POS, "num_ops": _NONNEG,
    "magnitude": _NONNEG, "magnitude_std": _NONNEG,
    # tasks, optimizers, hooks
    "label_smoothing": _PROB_OPEN, "mixup_alpha": _NONNEG, "cutmix_alpha": _NONNEG,
    "pixel_std": Gt(0), "norm_pix_loss": OneOf((True, False, "mae", "videomae", "none")),
    "prob": _UNIT, "switch_prob": _UNIT, "output": OneOf(("vector", "pitchyaw")),
    "task.gaze.loss": OneOf(("angular", "l1")),
    "lr": Gt(0), "blr": Gt(0), "weight_decay": _NONNEG, "momentum": Range(0, 1, hi_open=True),
    "betas": Range(0, 1, hi_open=True), "eps": Gt(0), "dampening": _UNIT,
    "layer_decay": Range(0, 1, lo_open=True), "trust_coefficient": Gt(0),
    "decay": Range(0, 1, lo_open=True, hi_open=True),  # EMA: 1 never moves, 0 is no average
    "warmup": OneOf((True, False)),
    "temperature": Gt(0), "task.momentum": Range(0, 1, hi_open=True),
    "momentum_schedule": OneOf(("cosine", "constant")), "pos_weight": Gt(0), "top_k": _POS,
    # contrastive models
    "proj_layers": _POS, "proj_hidden_dim": _POS, "proj_dim": _POS, "pred_layers": _NONNEG,
    "pred_hidden_dim": _POS, "queue_size": _NONNEG, "model.contrastive.norm": OneOf(("bn", "ln", "none")),
    # sections
    "epochs": _POS, "accum_steps": _POS, "clip_grad": Gt(0), "amp": OneOf(("none", "bf16", "fp16")),
    "eval_interval": _POS, "checkpoint_interval": _NONNEG, "keep_last": _POS,
    "log_interval": _POS, "best_mode": OneOf(("max", "min")), "patience": _NONNEG,
    "min_delta": _NONNEG, "train.test_checkpoint": OneOf(("last", "best")),
    "nan_guard": OneOf(("stop", "skip", "off")), "nan_skip_limit": _POS,
    "warmup_epochs": _NONNEG, "min_lr": _NONNEG, "schedule.gamma": Range(0, 1, lo_open=True),
    "schedule.power": Gt(0), "schedule.step_size": Gt(0), "schedule.milestones": Gt(0),
    "batch_size": _POS, "val_batch_size": _POS,
    "num_workers": _NONNEG, "prefetch_factor": _POS, "max_bad_fraction": _UNIT,
    "max_pixels": _POS, "aspect_ratios": Gt(0), "multiple_of": _POS,
    "strategy": OneOf(("ddp", "fsdp", "none")),
    "distributed.backend": OneOf(("auto", "nccl", "gloo")),
    "param_dtype": OneOf(("none", "bf16", "fp16")), "timeout_s": Gt(0),
}
# Paths that must exist when given: "file", "dir", or "any" (a file or a directory).
PATHS = {"annotations": "file", "labels": "file", "classes_from": "file", "dataset.root": "dir",
         "dataset.features.path": "file", "dataset.features.targets": "file",
         "dataset.multilabel_csv.classes": "file", "dataset.synthetic_multilabel.root": "dir"}
# The synthetic dataset writes its root on first use: a missing one is fine, a file is not.
MAY_BE_MISSING = {"dataset.synthetic_actions.root", "dataset.synthetic_multilabel.root"}
# Types of the `train:` keys the builder consumes itself (no signature carries them).
TRAIN_EXTRA_TYPES = {"device": "str", "tensorboard": "bool", "progress": "bool | None",
                     "threads": "int | str", "test_checkpoint": "str",
                     "compile": "bool | dict | None", "channels_last": "bool"}


def _lookup(table: dict[str, Any], kind: str, type_name: str | None, name: str) -> Any:
    for k in (f"{kind}.{type_name}.{name}", f"{kind}.{name}", name):
        if k in table:
            return table[k]
    return None


class _Check:
    def __init__(self, schema: dict[str, Any], *, check_paths: bool,
                 skip_paths: tuple[str, ...] = (), optimizer_type: Any = None) -> None:
        self.schema, self.optimizer_type = schema, optimizer_type
        self.registries, self.sections = schema["registries"], schema["sections"]
        self.check_paths, self.skip_paths = check_paths, skip_paths

    def node(self, value: Any, kind: str, key: str, *, device_transforms: bool = False) -> None:
        """One `{type: name, **kwargs}` node of registry `kind`."""
        if not isinstance(value, dict) or "type" not in value:
            raise not_a_node(value, key=key)
        name, entries = value["type"], self.registries[kind]
        if not isinstance(name, str) or name not in entries:
            raise ConfigError(f"{key}.type: unknown {kind} {_short(name)}"
                              f"{did_you_mean(str(name), entries)}")
        lists = ("transforms", "device_transforms") if device_transforms else ("transforms",)
        kwargs = {k: v for k, v in value.items() if k != "type"}
        if device_transforms:  # a data split: the builder's num_sample (validate_switches)
            kwargs.pop("num_sample", None)
        if kind == "dataset":
            if "transforms2" in entries[name]["params"]:  # two_views' second-view list
                lists = (*lists, "transforms2")
            for list_key in lists:
                steps = kwargs.pop(list_key, None)
                if steps is not None and not isinstance(steps, list):
                    raise ConfigError(f"{key}.{list_key}: expected a list of transforms, got "
                                      f"{value_kind(steps)}")
                for i, t in enumerate(steps or []):
                    self.node(t, "transform", f"{key}.{list_key}[{i}]")
        self.params(kwargs, entries[name], key=key, kind=kind, type_name=name)

    def section(self, value: Any, name: str, key: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value_kind(value)}")
        self.params(value, self.sections[name], key=key, kind=name, type_name=None)

    def params(self, kwargs: dict[str, Any], spec: Spec, *, key: str, kind: str,
               type_name: str | None) -> None:
        params = spec["params"]
        for k in kwargs:
            if not isinstance(k, str) or (k not in params and not spec["kwargs"]):
                raise unknown_key(f"{key}.{k}", str(k), here=params, schema=self.schema,
                                  optimizer_type=self.optimizer_type)
        for k, (_, required, _) in params.items():
            if required and k not in kwargs:
                raise ConfigError(f"{key}.{k}: required key is missing")
        for k, v in kwargs.items():
            if k in params:
                self.value(v, params[k][0], key=f"{key}.{k}", kind=kind, type_name=type_name,
                           name=k)

    def value(self, v: Any, annotation: str, *, key: str, kind: str, type_name: str | None,
              name: str) -> None:
        expr = _parse(annotation)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: must be a finite number, got {v!r}")
        if expr is not None and not _accepts(v, expr):
            raise ConfigError(f"{key}: expected {_show(expr)}, got {value_kind(v)}")
        if _too_big(v):
            raise ConfigError(f"{key}: {v} is out of range (an integer here is below 2**31)")
        for rule in [_lookup(RANGES, kind, type_name, name), *_annotated(expr)]:
            problem = rule and _problem(rule, v)
            if problem:
                raise ConfigError(f"{key}: {problem}")
        self.path(v, kind, type_name, name, key)
        child = NODES.get((kind, name))
        if child is None or v is None:
            return
        if child == "dataset[]":
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{key}: expected a non-empty list of dataset nodes, got "
                                  f"{value_kind(v)}")
            for i, node in enumerate(v):
                self.node(node, "dataset", f"{key}[{i}]")
        elif child.startswith("@"):
            self.section(v, child[1:], key)
        else:
            self.node(v, "dataset" if child == "split" else child, key,
                      device_transforms=child == "split")

    def path(self, v: Any, kind: str, type_name: str | None, name: str, key: str) -> None:
        need = _lookup(PATHS, kind, type_name, name)
        if need is None or not isinstance(v, str) or not self.check_paths or \
                any(key.startswith(f"{prefix}.") for prefix in self.skip_paths):
            return
        p = Path(v)
        what = {"dir": "directory", "file": "file", "any": "file or directory"}[need]
        if not p.exists():
            if f"{kind}.{type_name}.{name}" in MAY_BE_MISSING:
                return
            raise ConfigError(f"{key}: no such {what} {str(p)!r}")
        if (need == "dir" and not p.is_dir()) or (need == "file" and not p.is_file()):
            raise ConfigError(f"{key}: {str(p)!r} is not a {what}")


def check_recipe(cfg: dict[str, Any], schema: dict[str, Any], *, check_paths: bool = True,
                 train_data: bool = True) -> None:
    """Every check that needs no data; raises ConfigError (one line, dotted key) on the first
    problem. `cfg` is `tubelet.config.load_config`'s result (sections already typed).
    `check_paths=False` skips the existence of data and weight files (a recipe's test);
    `train_data=False` only that of `data.train`'s (eval reads `data.val` alone)."""
    from tubelet.validate_cross import check_cross  # noqa: PLC0415 - a sibling, split for size
    c = _Check(schema, check_paths=check_paths, skip_paths=() if train_data else ("data.train",),
               optimizer_type=cfg["optimizer"].get("type"))
    model = cfg["model"]
    c.node({k: v for k, v in model.items() if k not in MODEL_BUILDER_KEYS}, "model", "model")
    pretrained = model.get("pretrained")
    if pretrained is not None:
        if not isinstance(pretrained, str) or not pretrained:
            raise ConfigError(f"model.pretrained: expected a path, got {value_kind(pretrained)}")
        if check_paths and not Path(pretrained).exists():
            raise ConfigError(f"model.pretrained: no such file or directory {pretrained!r}")
    c.node(cfg["task"], "task", "task")
    c.node(cfg["optimizer"], "optimizer", "optimizer")
    c.section(cfg.get("data"), "data", "data")
    for section in ("train", "schedule", "distributed"):
        c.section(cfg.get(section), section, section)
    for i, hook in enumerate(cfg.get("hooks") or []):
        c.node(hook, "hook", f"hooks[{i}]")
    trackers.normalize(cfg.get("trackers"))  # names, options, and the package installed
    resume = cfg.get("resume")
    if not isinstance(resume, (str, dict, type(None))):  # a mapping is run-dir business
        raise ConfigError(f"resume: expected {', '.join(RESUME_MODES)}, null or a checkpoint "
                          f"path, got {value_kind(resume)}")
    if isinstance(resume, str) and resume not in RESUME_MODES and not Path(resume).is_file():
        raise ConfigError(f"resume: checkpoint {resume!r} not found"
                          f"{did_you_mean(resume, RESUME_MODES)}")
    check_cross(cfg, schema)
    check_switches(cfg, schema)


# ---- annotations: parsed from their source text, so a cached schema needs no imports ----

_NAMES = {"int": "int", "float": "float", "bool": "bool", "str": "str", "dict": "dict",
          "Mapping": "dict", "list": "list", "tuple": "seq", "Sequence": "seq", "Iterable": "seq",
          "Path": "str", "Any": "any", "object": "any", "None": "none", "NoneType": "none"}


def _parse(annotation: str) -> ast.expr | None:
    if not annotation:
        return None
    try:
        expr = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return _parse(expr.value)  # a quoted annotation under `from __future__ import annotations`
    return expr


def _head(expr: ast.expr) -> str:
    """`list` for `list[int]`, `Optional` for `typing.Optional[x]`, '' when unknown."""
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return expr.id if isinstance(expr, ast.Name) else ""


def _args(expr: ast.Subscript) -> list[ast.expr]:
    s = expr.slice
    return list(s.elts) if isinstance(s, ast.Tuple) else [s]


def _alternatives(expr: ast.expr) -> list[ast.expr]:
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
        return _alternatives(expr.left) + _alternatives(expr.right)
    if isinstance(expr, ast.Subscript) and _head(expr) == "Union":
        return [a for arg in _args(expr) for a in _alternatives(arg)]
    if isinstance(expr, ast.Subscript) and _head(expr) == "Optional":
        return _alternatives(_args(expr)[0]) + [ast.Constant(None)]
    if isinstance(expr, ast.Subscript) and _head(expr) == "Annotated":
        return _alternatives(_args(expr)[0])
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        inner = _parse(expr.value)  # a quoted forward reference
        return _alternatives(inner) if inner is not None else [ast.Name("Any")]
    return [expr]


def _accepts(v: Any, expr: ast.expr) -> bool:
    """Whether `v` fits one of the alternatives a recipe can spell. Types it cannot spell (a
    tensor in torch's `Union[float, Tensor]`) are left out; when nothing is left, anything goes
    and the builder has the last word."""
    verdicts = [_accepts_one(v, alt) for alt in _alternatives(expr)]
    known = [x for x in verdicts if x is not None]
    return not known or any(known)


def _accepts_one(v: Any, expr: ast.expr) -> bool | None:
    if isinstance(expr, ast.Constant) and expr.value is None:
        return v is None
    if isinstance(expr, ast.Subscript) and _head(expr) == "Literal":
        return any(isinstance(a, ast.Constant) and a.value == v and type(a.value) is type(v)
                   for a in _args(expr))
    kind = _NAMES.get(_head(expr))
    if kind is None:
        return None
    if kind == "any":
        return True
    if kind == "none":
        return v is None
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "str":
        return isinstance(v, str)
    if kind == "dict":
        return isinstance(v, dict)
    if not isinstance(v, list):
        return False
    if not isinstance(expr, ast.Subscript):
        return True
    items = _args(expr)
    if kind == "seq" and _head(expr) == "tuple" and not (
            len(items) == 2 and isinstance(items[1], ast.Constant) and items[1].value is ...):
        return len(v) == len(items) and all(_accepts(x, t) for x, t in zip(v, items))
    return all(_accepts(x, items[0]) for x in v)


def _show(expr: ast.expr) -> str:
    """An annotation for an error message, without the alternatives a recipe cannot spell."""
    parts = []
    for alt in _alternatives(expr):
        head = _head(alt)
        if isinstance(alt, ast.Constant) and alt.value is None:
            parts.append("null")
        elif head in _NAMES or head == "Literal":
            text = ast.unparse(alt)
            parts.append(text)
    return " or ".join(dict.fromkeys(parts)) or ast.unparse(expr)


def _annotated(expr: ast.expr | None) -> list[Range | OneOf]:
    """Constraints written in a signature: `Annotated[int, Min(1)]`, `Range(0, 1)`, ..."""
    if not (isinstance(expr, ast.Subscript) and _head(expr) == "Annotated"):
        return []
    makers = {"Min": Min, "Gt": Gt, "Range": Range, "OneOf": OneOf}
    rules = []
    for arg in _args(expr)[1:]:
        if isinstance(arg, ast.Call) and _head(arg.func) in makers:
            args = [ast.literal_eval(a) for a in arg.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in arg.keywords}
            rules.append(makers[_head(arg.func)](*args, **kwargs))
    return rules


def _problem(rule: Range | OneOf, v: Any) -> str | None:
    if isinstance(rule, OneOf):
        return rule.problem(v)
    numbers = v if isinstance(v, list) else [v]
    for x in numbers:
        if isinstance(x, list):
            found = _problem(rule, x)
            if found:
                return found
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            if isinstance(x, float) and math.isnan(x):
                return "must be a number, got nan"
            found = rule.problem(x)
            if found:
                return f"{found}, got {x!r}"
    return None


def _too_big(v: Any) -> bool:
    """No count, size or interval of a recipe needs 2**31 or more; such a value only
    exhausts memory or time at build (the seeds, the only other ints, are capped lower)."""
    if isinstance(v, list):
        return any(_too_big(x) for x in v)
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**31




def _short(value: Any) -> str:
    return repr(value) if isinstance(value, str) and len(value) <= 60 else value_kind(value)
