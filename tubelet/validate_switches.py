"""Recipe checks for the run switches and the lr shape: `model.grad_checkpointing`,
`train.compile`, `train.channels_last`, `data.train.num_sample`, the `schedule:` keys of each
schedule type and `optimizer.custom_keys`. Runs inside `tubelet.validate.check_recipe`, after
every node passed its own checks. No torch."""
from __future__ import annotations

import math
from typing import Any

from tubelet.registry import ConfigError, did_you_mean, value_kind

# kept in step with tubelet.engine.schedule and tubelet.engine.switches (tests check it)
SCHEDULES = ("cosine", "poly", "step", "multistep")
SHAPE_KEYS = {"cosine": ("min_lr",), "poly": ("min_lr", "power"),
              "step": ("step_size", "gamma"), "multistep": ("milestones", "gamma")}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_KEYS = ("mode", "fullgraph", "dynamic")
MULT_KEYS = ("lr_mult", "decay_mult")
# `model:` keys the builder consumes (not constructor arguments)
MODEL_BUILDER_KEYS = ("pretrained", "grad_checkpointing")



def compile_options(spec: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """`train.compile` as `engine.switches.compile_model` keywords, or None (off)."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return {}
    return dict(spec)

def check_switches(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    models = schema["registries"]["model"]
    model = cfg["model"]
    backbone = model.get("backbone") if isinstance(model.get("backbone"), dict) else None

    def flag(name: str) -> bool:
        """The model (for a model assembled around a backbone: its backbone) has capability
        `name` (a schema flag, validate_schema.describe)."""
        return bool(models[(backbone or model)["type"]].get(name))

    gc = model.get("grad_checkpointing")
    if gc is not None and not isinstance(gc, bool):
        raise ConfigError(f"model.grad_checkpointing: expected true or false, got "
                          f"{value_kind(gc)}")
    if gc and not flag("grad_checkpointing"):
        raise ConfigError(f"model.grad_checkpointing: model {model['type']!r} has no "
                          "set_grad_checkpointing() (ViTs, MAE and resnet3d do); remove the key")
    train = cfg.get("train") or {}
    _check_compile(train.get("compile"))
    last = train.get("channels_last")
    if last is not None and not isinstance(last, bool):
        raise ConfigError(f"train.channels_last: expected true or false, got {value_kind(last)}")
    if last and not flag("channels_last"):
        raise ConfigError(f"train.channels_last: applies to 3D CNNs (resnet3d_*, or a "
                          f"video_classifier with one as backbone), not to model "
                          f"{model['type']!r}; remove the key")
    _check_num_sample(cfg.get("data") or {})
    optimizer = cfg.get("optimizer") or {}
    check_schedule(cfg.get("schedule") or {}, lr=optimizer.get("lr"))
    check_decay(optimizer, lr=optimizer.get("lr"))
    check_custom_keys(optimizer.get("custom_keys"))


def _check_compile(spec: Any) -> None:
    if spec is None or isinstance(spec, bool):
        return
    if not isinstance(spec, dict):
        raise ConfigError(f"train.compile: expected true, false or a mapping "
                          f"{{mode: ...}}, got {value_kind(spec)}")
    for k, v in spec.items():
        if k not in COMPILE_KEYS:
            raise ConfigError(f"train.compile.{k}: unknown key{did_you_mean(str(k), COMPILE_KEYS)}"
                              f" (one of {', '.join(COMPILE_KEYS)})")
        if k == "mode" and v not in COMPILE_MODES:
            raise ConfigError(f"train.compile.mode: unknown {v!r}; choose one of "
                              f"{list(COMPILE_MODES)}{did_you_mean(str(v), COMPILE_MODES)}")
        if k in ("fullgraph", "dynamic") and not (isinstance(v, bool) or
                                                  (k == "dynamic" and v is None)):
            raise ConfigError(f"train.compile.{k}: expected true or false, got {value_kind(v)}")


def _check_num_sample(data: dict[str, Any]) -> None:
    for split in ("train", "val"):
        node = data.get(split)
        if not isinstance(node, dict) or "num_sample" not in node:
            continue
        k = node["num_sample"]
        key = f"data.{split}.num_sample"
        if split == "val":
            raise ConfigError(f"{key}: repeated augmentation is for data.train only")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"{key}: expected an integer >= 1, got {k!r}")
        if k >= 2**31:  # as every count of a recipe (tubelet.validate._too_big)
            raise ConfigError(f"{key}: {k} is out of range (an integer here is below 2**31)")
        if k > 1 and data.get("dynamic_batch") is not None:
            raise ConfigError(f"{key}: does not combine with data.dynamic_batch (its pixel "
                              "budget counts one clip per sample)")
        if k > 1 and node.get("device_transforms"):
            raise ConfigError(f"{key}: the device transforms draw per video, so the {k} clips "
                              "of one video would get the same augmentation; move them to "
                              "data.train.transforms")


def check_schedule(node: dict[str, Any], *, lr: Any = None) -> None:
    """The keys each schedule type reads, and their values beyond their types and ranges.
    `lr`: optimizer.lr, the peak (with `blr` the peak depends on the world size: the schedule
    checks it when built)."""
    kind = node.get("type", "cosine")
    if kind not in SCHEDULES:
        raise ConfigError(f"schedule.type: unknown {kind!r}; choose one of {list(SCHEDULES)}"
                          f"{did_you_mean(str(kind), SCHEDULES)}")
    takes = SHAPE_KEYS[kind]
    for k in ("min_lr", "power", "step_size", "gamma", "milestones"):
        if node.get(k) is not None and k not in takes:
            users = [t for t, keys in SHAPE_KEYS.items() if k in keys]
            raise ConfigError(f"schedule.{k}: not used by schedule.type {kind!r} (only by "
                              f"{', '.join(users)})")
    min_lr = node.get("min_lr")
    if isinstance(min_lr, (int, float)) and isinstance(lr, (int, float)) and min_lr > lr:
        raise min_lr_above_peak(min_lr, lr, kind=kind, peak="optimizer.lr")
    if kind == "step" and node.get("step_size") is None:
        raise ConfigError("schedule.step_size: required for schedule.type 'step' (epochs "
                          "between drops)")
    if kind == "multistep":
        ms = node.get("milestones")
        if not isinstance(ms, list) or not ms:
            raise ConfigError("schedule.milestones: required for schedule.type 'multistep': "
                              f"a list of epochs, got {value_kind(ms)}")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ConfigError(f"schedule.milestones: must be strictly increasing, got {ms}")


def min_lr_above_peak(min_lr: float, peak_lr: float, *, kind: str, peak: str) -> ConfigError:
    """A floor above the peak: the decay would raise the lr as the run goes on."""
    return ConfigError(f"schedule.min_lr: {min_lr:g} is above the peak lr {peak_lr:g} ({peak}); "
                       f"the {kind} schedule would raise the lr as the run goes on")


def check_decay(node: dict[str, Any], *, lr: Any) -> None:
    """AdamW's decoupled weight decay scales every weight by 1 - lr x weight_decay per step,
    SGD's coupled one too (before its momentum). At lr x weight_decay >= 1 that factor is 0 or
    less: the weights are wiped or flipped each step, and training goes on with exit 0. LARS's
    trust ratio rescales the step per layer, so the product says nothing there. `lr`: the peak
    (optimizer.lr; build.build_optimizer checks blr's once it is scaled)."""
    wd = node.get("weight_decay")
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (wd, lr))
    if node.get("type") in ("adamw", "sgd") and numbers and lr * wd >= 1:
        raise ConfigError(f"optimizer.weight_decay: {wd:g} x the peak lr {lr:g} = {lr * wd:g}; "
                          f"each step would scale every weight by {1 - lr * wd:g} (1 - lr x "
                          f"weight_decay must stay above 0)")


def check_custom_keys(keys: Any) -> None:
    if keys is None:
        return
    if not isinstance(keys, dict) or not keys:
        raise ConfigError(f"optimizer.custom_keys: expected a mapping {{name pattern: "
                          f"{{lr_mult: x, decay_mult: y}}}}, got {value_kind(keys)}")
    for pattern, mults in keys.items():
        where = f"optimizer.custom_keys.{pattern}"
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"optimizer.custom_keys: a pattern must be a non-empty string, "
                              f"got {pattern!r}")
        if not isinstance(mults, dict) or not mults:
            raise ConfigError(f"{where}: expected a mapping with lr_mult and/or decay_mult, "
                              f"got {value_kind(mults)}")
        for k, v in mults.items():
            if k not in MULT_KEYS:
                raise ConfigError(f"{where}.{k}: unknown key{did_you_mean(str(k), MULT_KEYS)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise ConfigError(f"{where}.{k}: must be a finite number >= 0, got {v!r}")
