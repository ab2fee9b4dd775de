"""What a recipe may say and whether it says it right: the sections' schemas (`DataOptions`,
`DistributedOptions`, the Trainer's keywords), the schema of every registered part, the
validation of a whole recipe and the model's dry run on the meta device. Nothing here builds
more than a meta model; `tubelet.build` builds the run once these checks pass.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tubelet import distributed as dist
from tubelet.engine import parallel
from tubelet.engine.early_stop import EarlyStopping
from tubelet.engine.optim import GROUP_KEYS, param_groups
from tubelet.engine.schedule import lr_schedule
from tubelet.engine.threads import check_threads
from tubelet.engine.trainer import Trainer
from tubelet.data.dynamic_batch import DynamicBatchSampler
from tubelet.registry import (DATASETS, HOOKS, MODELS, OPTIMIZERS, TASKS, TRANSFORMS,
                              ConfigError, build)
from tubelet.validate import RUNTIME, TRAIN_EXTRA_TYPES, check_recipe
from tubelet.validate_schema import SCHEMA_VERSION, describe, save_schema
from tubelet.validate_cross import input_shape
from tubelet.validate_switches import MODEL_BUILDER_KEYS

_ARG_ERROR = re.compile(r"^[A-Za-z_]\w*(\.\w+)*:")  # "root: ...", not "/path/file.txt:3: ..."
TRAINER_RUNTIME = {"model", "task", "optimizer", "train_loader", "train_sampler", "val_loader",
                   "run_dir", "base_lr", "logger", "hooks", "resume", "extra_state", "device",
                   "warmup_epochs", "min_lr", "tester", "schedule"}
# `train:` keys the builder itself consumes
TRAIN_EXTRA = {"device", "tensorboard", "progress", "threads", "test_checkpoint", "compile",
               "channels_last"}
SAMPLER_RUNTIME = ("num_samples", "seed", "rank", "world_size")  # what the builder passes


@dataclass(frozen=True)
class DataOptions:
    """The keys of a recipe's `data:` section: these fields are their schema."""
    train: dict
    batch_size: int
    val: dict | None = None
    val_batch_size: int | None = None  # also the test split's
    test: dict | None = None  # evaluated once after training and by `tubelet test`
    num_workers: int = 0
    persistent_workers: bool = True
    prefetch_factor: int | None = None
    max_bad_fraction: float = 0.01  # above this share of unreadable files the run exits 2
    dynamic_batch: dict | None = None  # VGGT-style shapes per batch (data/dynamic_batch.py)


@dataclass(frozen=True)
class DistributedOptions:
    """The keys of a recipe's `distributed:` section (docs/distributed.md). They apply only
    when a launcher (torchrun, srun) starts more than one process."""
    strategy: str = "ddp"  # ddp | fsdp | none
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    timeout_s: float = 1800.0  # how long a collective waits for a missing rank
    sync_batchnorm: bool = False  # ddp: BatchNorm statistics over all ranks
    static_graph: bool = False  # ddp: the graph is the same every step
    find_unused_parameters: bool = False  # ddp
    param_dtype: str = "none"  # fsdp mixed precision: none | bf16 | fp16 (reduce stays fp32)

    def check(self) -> None:
        for key, value, choices in (("strategy", self.strategy, parallel.STRATEGIES),
                                    ("backend", self.backend, dist.BACKENDS),
                                    ("param_dtype", self.param_dtype, parallel.PARAM_DTYPES)):
            if value not in choices:
                raise ConfigError(f"distributed.{key}: unknown {value!r}; choose one of "
                                  f"{list(choices)}")


def _register_builtins(imports: list[str] | None) -> None:
    """Import the modules that register tubelet's parts, then the recipe's plugins."""
    for name in ("tubelet.models", "tubelet.data.datasets", "tubelet.data.transforms",
                 "tubelet.tasks", "tubelet.engine.optim", "tubelet.engine.ema"):
        importlib.import_module(name)
    for i, name in enumerate(imports or []):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"imports[{i}]: cannot import {name!r} ({e})") from None


def validate_config(cfg: dict[str, Any], *, check_paths: bool = True,
                    train_data: bool = True) -> dict[str, Any]:
    """Check every node, value, path and cross-node fact against the live registries and the
    signatures they feed (`tubelet.validate`); build nothing. Saves the schema so that the next
    run answers before importing torch. Returns the schema it checked against."""
    plugins = cfg.get("imports")
    live = schema(plugins)
    if not plugins:
        save_schema(live)
    check_recipe(cfg, live, check_paths=check_paths, train_data=train_data)
    DistributedOptions(**cfg.get("distributed") or {}).check()
    if data_node := (cfg.get("data") or {}).get("dynamic_batch"):
        for k in SAMPLER_RUNTIME:
            if k in data_node:
                raise ConfigError(f"data.dynamic_batch.{k}: set by tubelet, not by the recipe")
    check_threads((cfg.get("train") or {}).get("threads", "auto"))
    return live


def dry_forward(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    """Build the model on the meta device (no memory, no weights, no RNG draws) and, when the
    recipe fixes the clip shape, run a zero batch through it: constructor refusals and shape
    mismatches become one-line errors before any data or run dir is touched. A model whose
    forward meta tensors cannot run (MAE's masking is data-dependent) is only built."""
    try:
        model = meta_model(cfg)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        if isinstance(e, ConfigError) and str(e).startswith("model"):
            raise
        raise ConfigError(f"model: {_first_line(e)}") from None
    if (cfg["optimizer"] or {}).get("custom_keys"):  # each pattern must name some parameter
        param_groups(model, weight_decay=0.0, custom_keys=cfg["optimizer"]["custom_keys"])
    shape = input_shape(cfg, schema)
    if shape is None:
        return
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape, device="meta"))
    except NotImplementedError:  # an op without a meta kernel: not a recipe problem
        return
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ConfigError(f"model: a batch of data.train's shape {list(shape)} fails: "
                          f"{_first_line(e)}") from None
    classes = (cfg["task"] or {}).get("num_classes")
    if torch.is_tensor(out) and out.ndim == 2 and classes and out.shape[1] != classes:
        raise ConfigError(f"task.num_classes: {classes}, but the model outputs "
                          f"{out.shape[1]} values per clip")


def meta_model(cfg: dict[str, Any]) -> nn.Module:
    """The recipe's model on the meta device: no memory, no weights, no RNG draws."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return build_at(model_spec(cfg), MODELS, key="model")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def schema(imports: list[str] | None = None) -> dict[str, Any]:
    """What `tubelet.validate` checks a recipe against: every registered part's and every
    section's parameters, as plain data."""
    from tubelet.data.mixup import Mixup
    from tubelet.models.heads import HEADS, NECKS
    _register_builtins(imports)
    registries = {}
    for kind, reg in (("model", MODELS), ("head", HEADS), ("neck", NECKS), ("dataset", DATASETS),
                      ("transform", TRANSFORMS), ("task", TASKS), ("optimizer", OPTIMIZERS),
                      ("hook", HOOKS)):
        runtime = RUNTIME.get(kind, ())
        registries[kind] = {name: describe(reg.get(name), runtime=runtime) for name in reg.names()}
    for spec in registries["optimizer"].values():  # the builder's own optimizer keys
        spec["params"].update({k: ["dict | None" if k == "custom_keys" else "float | None",
                                   False, None] for k in GROUP_KEYS})
    train = describe(Trainer, runtime=tuple(TRAINER_RUNTIME))
    train["params"].update({k: [TRAIN_EXTRA_TYPES.get(k, ""), False, None] for k in TRAIN_EXTRA})
    sections = {"train": train, "data": describe(DataOptions),
                "schedule": describe(lr_schedule, runtime=("base_lr", "total_steps", "epochs")),
                "distributed": describe(DistributedOptions),
                "dynamic_batch": describe(DynamicBatchSampler, runtime=SAMPLER_RUNTIME),
                "early_stop": describe(EarlyStopping, runtime=("metric", "mode")),
                "mixup": describe(Mixup, runtime=("num_classes", "label_smoothing"))}
    return {"version": SCHEMA_VERSION, "registries": registries, "sections": sections}


def model_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    """The `model:` node without `pretrained` and `grad_checkpointing`, which the builder
    consumes (`build_model`)."""
    return {k: v for k, v in cfg["model"].items() if k not in MODEL_BUILDER_KEYS}


def build_at(node: dict[str, Any], registry: Any, *, key: str, **runtime: Any) -> Any:
    """`build`; a user error that a constructor raises about one of its arguments
    ("root: no such directory ...") comes out under the node's dotted key ("data.train.root: ...")."""
    try:
        return build(node, registry, **runtime)
    except ConfigError as e:
        if _ARG_ERROR.match(str(e)):
            raise ConfigError(f"{key}.{e}") from None
        raise
