"""From a resolved recipe (a plain dict) to built objects. Everything is validated first, against
the registries and the signatures of what each node feeds, before anything heavy is built.
This is the one place that reads the recipe's sections; below it, components take plain keywords.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tubelet import distributed as dist
from tubelet.config import config_hash, dump_config
from tubelet.data.loader import ResumableSampler, ShardSampler, build_loader
from tubelet.engine.checkpoint import load_checkpoint
from tubelet.engine.optim import GROUP_KEYS, param_groups
from tubelet.engine.schedule import scaled_lr
from tubelet.engine.trainer import Trainer, run_eval
from tubelet.loggers import RunLogger, setup_text_log
from tubelet.registry import (DATASETS, HOOKS, MODELS, OPTIMIZERS, TASKS, TRANSFORMS,
                              ConfigError, build, check_kwargs, did_you_mean, validate)

log = logging.getLogger("tubelet")
_ARG_ERROR = re.compile(r"^[A-Za-z_]\w*(\.\w+)*:")  # "root: ...", not "/path/file.txt:3: ..."

# Trainer arguments that the builder supplies; every other Trainer keyword is a `train:` key.
TRAINER_RUNTIME = {"model", "task", "optimizer", "train_loader", "train_sampler", "val_loader",
                   "run_dir", "base_lr", "logger", "hooks", "resume", "extra_state", "device",
                   "warmup_epochs", "min_lr"}
TRAIN_EXTRA = {"device", "tensorboard", "progress"}  # `train:` keys the builder itself consumes
SCHEDULE_KEYS = {"warmup_epochs", "min_lr"}  # the Trainer keywords fed by `schedule:`


@dataclass(frozen=True)
class DataOptions:
    """The keys of a recipe's `data:` section: these fields are their schema."""
    train: dict
    batch_size: int
    val: dict | None = None
    val_batch_size: int | None = None
    num_workers: int = 0
    persistent_workers: bool = True
    prefetch_factor: int | None = None


def _register_builtins(imports: list[str] | None) -> None:
    """Import the modules that register tubelet's parts, then the recipe's plugins."""
    for name in ("tubelet.models", "tubelet.data.datasets", "tubelet.data.transforms",
                 "tubelet.tasks", "tubelet.engine.optim"):
        importlib.import_module(name)
    for i, name in enumerate(imports or []):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"imports[{i}]: cannot import {name!r} ({e})") from None


def validate_config(cfg: dict[str, Any]) -> None:
    """Check every node against its registry and target signature; build nothing."""
    _register_builtins(cfg.get("imports"))
    validate(cfg["model"], MODELS, key="model")
    validate(cfg["task"], TASKS, key="task")
    opt = cfg["optimizer"]
    validate({k: v for k, v in opt.items() if k not in GROUP_KEYS}, OPTIMIZERS, key="optimizer",
             runtime=("params", "lr"))
    data = cfg.get("data") or {}
    check_kwargs(DataOptions, data, key="data")
    for split in ("train", "val"):
        node = data.get(split)
        if node is None:
            continue
        for i, t in enumerate(node.get("transforms") or []):
            validate(t, TRANSFORMS, key=f"data.{split}.transforms[{i}]")
        validate({k: v for k, v in node.items() if k != "transforms"}, DATASETS,
                 key=f"data.{split}", runtime=("transform",))
    allowed = (set(inspect.signature(Trainer).parameters) - TRAINER_RUNTIME) | TRAIN_EXTRA
    for section, keys in (("train", allowed), ("schedule", SCHEDULE_KEYS)):
        for key in cfg.get(section) or {}:
            if key not in keys:
                raise ConfigError(f"{section}.{key}: unknown key{did_you_mean(key, keys)}")
    for i, node in enumerate(cfg.get("hooks") or []):
        validate(node, HOOKS, key=f"hooks[{i}]")
    resume = cfg.get("resume")
    if resume not in (None, "auto") and not Path(str(resume)).is_file():
        raise ConfigError(f"resume: checkpoint {str(resume)!r} not found")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return torch.device(name)


def build_at(node: dict[str, Any], registry: Any, *, key: str, **runtime: Any) -> Any:
    """`build`; a user error that a constructor raises about one of its arguments
    ("root: no such directory ...") comes out under the node's dotted key ("data.train.root: ...")."""
    try:
        return build(node, registry, **runtime)
    except ConfigError as e:
        if _ARG_ERROR.match(str(e)):
            raise ConfigError(f"{key}.{e}") from None
        raise


def build_dataset(node: dict[str, Any], *, key: str) -> Any:
    from tubelet.data.transforms import Compose
    transforms = [build_at(t, TRANSFORMS, key=f"{key}.transforms[{i}]")
                  for i, t in enumerate(node.get("transforms") or [])]
    spec = {k: v for k, v in node.items() if k != "transforms"}
    return build_at(spec, DATASETS, key=key, transform=Compose(transforms) if transforms else None)


def build_loaders(data: DataOptions, *, seed: int, device: torch.device, train: bool = True
                  ) -> tuple[Any, ResumableSampler | None, Any]:
    """(train loader, its resumable sampler, val loader); the train pair is None when `train`
    is False (eval), the val loader is None when the recipe has no `data.val`."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    common = dict(num_workers=data.num_workers, seed=seed, rank=rank,
                  pin_memory=device.type == "cuda", prefetch_factor=data.prefetch_factor,
                  persistent_workers=data.persistent_workers)
    train_loader = sampler = val_loader = None
    if train:
        train_set = build_dataset(data.train, key="data.train")
        sampler = ResumableSampler(len(train_set), seed=seed, rank=rank, world_size=world_size)
        train_loader = build_loader(train_set, batch_size=data.batch_size, sampler=sampler,
                                    drop_last=True, **common)
    if data.val:
        val_set = build_dataset(data.val, key="data.val")
        val_loader = build_loader(val_set, batch_size=data.val_batch_size or data.batch_size,
                                  sampler=ShardSampler(len(val_set), rank=rank,
                                                       world_size=world_size), **common)
    return train_loader, sampler, val_loader


def build_optimizer(node: dict[str, Any], model: nn.Module, *,
                    total_batch_size: int) -> tuple[torch.optim.Optimizer, float]:
    kwargs = {k: v for k, v in node.items() if k not in ("type", *GROUP_KEYS)}
    lr = scaled_lr(lr=kwargs.pop("lr", None), blr=node.get("blr"), total_batch_size=total_batch_size)
    groups = param_groups(model, weight_decay=kwargs.pop("weight_decay", 0.0),
                          layer_decay=node.get("layer_decay"))
    return build_at({"type": node["type"], **kwargs}, OPTIMIZERS, key="optimizer",
                    params=groups, lr=lr), lr


def build_trainer(cfg: dict[str, Any]) -> Trainer:
    validate_config(cfg)
    train = dict(cfg.get("train") or {})
    data, seed = DataOptions(**cfg.get("data") or {}), int(cfg["seed"])
    run_dir = Path(cfg["run"]["dir"])
    setup_text_log(run_dir, enabled=dist.is_main())
    if dist.is_main():
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    device = resolve_device(str(train.pop("device", "auto")))
    seed_everything(seed)

    train_loader, sampler, val_loader = build_loaders(data, seed=seed, device=device)

    model = build_at(cfg["model"], MODELS, key="model").to(device)
    task = build_at(cfg["task"], TASKS, key="task").to(device)
    total_batch = data.batch_size * dist.get_world_size() * train.get("accum_steps", 1)
    optimizer, base_lr = build_optimizer(cfg["optimizer"], model, total_batch_size=total_batch)
    hooks = [build_at(h, HOOKS, key=f"hooks[{i}]") for i, h in enumerate(cfg.get("hooks") or [])]
    logger = RunLogger(run_dir, enabled=dist.is_main(), tensorboard=train.pop("tensorboard", True),
                       progress=train.pop("progress", None))
    return Trainer(model=model, task=task, optimizer=optimizer, train_loader=train_loader,
                   train_sampler=sampler, val_loader=val_loader, run_dir=run_dir,
                   base_lr=base_lr, logger=logger, device=device, hooks=hooks,
                   resume=cfg.get("resume"), extra_state={"config_hash": config_hash(cfg)},
                   **(cfg.get("schedule") or {}), **train)


def evaluate_checkpoint(cfg: dict[str, Any]) -> dict[str, float]:
    """`tubelet eval`: load `checkpoint`'s model weights and evaluate on `data.val`."""
    validate_config(cfg)
    path = cfg.get("checkpoint")
    if not path or not Path(str(path)).is_file():
        raise ConfigError(f"checkpoint: {path!r} not found (pass checkpoint=PATH)")
    data = DataOptions(**cfg.get("data") or {})
    if not data.val:
        raise ConfigError("data.val: required for eval")
    setup_text_log(None)
    device = resolve_device(str((cfg.get("train") or {}).get("device", "auto")))
    seed_everything(int(cfg["seed"]))
    model = build_at(cfg["model"], MODELS, key="model")
    model.load_state_dict(load_checkpoint(path)["model"])
    task = build_at(cfg["task"], TASKS, key="task")
    _, _, loader = build_loaders(data, seed=int(cfg["seed"]), device=device, train=False)
    return run_eval(model.to(device), task.to(device), loader, device=device)
