"""From a resolved recipe (a plain dict) to built objects. Everything is validated first, against
the registries and the signatures of what each node feeds, before anything heavy is built.
This is the one place that reads the recipe's sections; below it, components take plain keywords.
"""
from __future__ import annotations

import importlib
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
from tubelet.data.batches import BadData, BatchStream
from tubelet.data.datasets.base import require_labels
from tubelet.data.dynamic_batch import DynamicBatchSampler, check_dynamic_dataset
from tubelet.data.loader import ResumableSampler, ShardSampler, build_loader
from tubelet.data.repeated_aug import RepeatedCollate, set_num_sample
from tubelet.engine import parallel, streams
from tubelet.engine.checkpoint import load_checkpoint, model_mismatch
from tubelet.engine.early_stop import EarlyStopping
from tubelet.engine.optim import GROUP_KEYS, param_groups
from tubelet.engine.schedule import lr_schedule, scaled_lr
from tubelet.engine.summary import model_summary, write_summary
from tubelet.engine.switches import compile_model, set_grad_checkpointing, use_channels_last
from tubelet.engine.evaluate import run_eval
from tubelet.engine.threads import check_threads, set_threads
from tubelet.engine.trainer import Trainer
from tubelet.envinfo import collect_env, write_env
from tubelet.loggers import RunLogger, open_log_file, setup_text_log
from tubelet.model_card import CARD_KEY, clip_of, dataset_classes, make_card
from tubelet.redact import redact_config
from tubelet.rundir import RunDir, resolve_run_dir
from tubelet.trackers import TrackerGroup
from tubelet.trackers import normalize as normalize_trackers
from tubelet.registry import (DATASETS, HOOKS, MODELS, OPTIMIZERS, TASKS, TRANSFORMS,
                              ConfigError, build)
from tubelet.validate import RUNTIME, TRAIN_EXTRA_TYPES, check_recipe
from tubelet.validate_schema import SCHEMA_VERSION, describe, save_schema
from tubelet.validate_cross import input_shape
from tubelet.validate_switches import MODEL_BUILDER_KEYS, compile_options

log = logging.getLogger("tubelet")
_ARG_ERROR = re.compile(r"^[A-Za-z_]\w*(\.\w+)*:")  # "root: ...", not "/path/file.txt:3: ..."

# Trainer arguments that the builder supplies; every other Trainer keyword is a `train:` key.
TRAINER_RUNTIME = {"model", "task", "optimizer", "train_loader", "train_sampler", "val_loader",
                   "run_dir", "base_lr", "logger", "hooks", "resume", "extra_state", "device",
                   "warmup_epochs", "min_lr", "tester", "schedule"}
# `train:` keys the builder itself consumes
TRAIN_EXTRA = {"device", "tensorboard", "progress", "threads", "test_checkpoint", "compile",
               "channels_last"}
SCHEDULE_KEYS = {"warmup_epochs", "min_lr"}  # Trainer keywords fed by `schedule:`; the rest
# of the section (type, milestones, ...) goes to the Trainer's `schedule` (engine/schedule.py)
DATA_TRANSFORM_KEYS = ("transforms", "device_transforms")  # lists a data split node may hold
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


def setup_distributed(cfg: dict[str, Any], device: torch.device) -> tuple[DistributedOptions,
                                                                          torch.device]:
    """Join the process group (when launched with several processes) and check that every
    rank resolved the same recipe. Returns the options and this rank's device."""
    opts = DistributedOptions(**cfg.get("distributed") or {})
    device = dist.init_distributed(device=device, backend=opts.backend, timeout_s=opts.timeout_s)
    dist.check_same(config_hash(cfg), what="config hash")
    return opts, device


def wrap_model(model: nn.Module, opts: DistributedOptions, device: torch.device) -> nn.Module:
    return parallel.wrap_model(model, strategy=opts.strategy, device=device,
                               sync_batchnorm=opts.sync_batchnorm, static_graph=opts.static_graph,
                               find_unused_parameters=opts.find_unused_parameters,
                               param_dtype=opts.param_dtype)


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


def num_test_views(data: dict[str, Any]) -> int:
    """Views per video at test: `data.test`'s when the recipe has one, else `data.val`'s."""
    node = data.get("test") or data.get("val") or {}
    return int(node.get("temporal_views", 1) or 1) * int(node.get("spatial_crops", 1) or 1)


def build_model(cfg: dict[str, Any], *, load_pretrained: bool = True) -> nn.Module:
    """The model; `model.pretrained: PATH` (a checkpoint file, or a run directory, meaning its
    checkpoints/last.pt) loads foreign or our weights through `models.weights`."""
    model = build_at(model_spec(cfg), MODELS, key="model")
    if cfg["model"].get("grad_checkpointing"):
        set_grad_checkpointing(model)
    path = cfg["model"].get("pretrained")
    if path and load_pretrained:
        from tubelet.models.weights import load_pretrained as load
        load(model, path)
    return model


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


def build_transforms(node: dict[str, Any], *, key: str, list_key: str) -> Any:
    from tubelet.data.transforms import Compose
    transforms = [build_at(t, TRANSFORMS, key=f"{key}.{list_key}[{i}]")
                  for i, t in enumerate(node.get(list_key) or [])]
    return Compose(transforms) if transforms else None


def build_dataset(node: dict[str, Any], *, key: str) -> tuple[Any, Any]:
    """(dataset, device transform or None). `transforms` run in the loader workers,
    `device_transforms` on the batch after transfer (the dataset then yields uint8 clips)."""
    device_transform = build_transforms(node, key=key, list_key="device_transforms")
    spec = {k: v for k, v in node.items() if k not in (*DATA_TRANSFORM_KEYS, "num_sample")}
    if device_transform is not None:
        spec["to_float"] = False
    dataset = build_at(spec, DATASETS, key=key,
                       transform=build_transforms(node, key=key, list_key="transforms"))
    return dataset, device_transform


def _stream(loader: Any, dataset: Any, device_transform: Any, *, split: str, seed: int,
            data: DataOptions, device: torch.device, run_dir: Path | None) -> BatchStream:
    """Wrap a loader for bad-data accounting (startup findings first) and device transforms."""
    bad = BadData(split=split, num_files=getattr(dataset, "num_files", len(dataset)),
                  max_fraction=data.max_bad_fraction, run_dir=run_dir, rank=dist.get_rank())
    bad.add(getattr(dataset, "bad_files", []))
    return BatchStream(loader, bad_data=bad, device=device, device_transform=device_transform,
                       train=split == "train", seed=seed)


def build_train_sampler(data: DataOptions, dataset: Any, *, seed: int
                        ) -> ResumableSampler | DynamicBatchSampler:
    """The train batch sampler: fixed `data.batch_size`, or `data.dynamic_batch`."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if data.dynamic_batch is None:
        return ResumableSampler(len(dataset), batch_size=data.batch_size, seed=seed, rank=rank,
                                world_size=world_size)
    sampler = DynamicBatchSampler(len(dataset), seed=seed, rank=rank, world_size=world_size,
                                  **data.dynamic_batch)
    check_dynamic_dataset(dataset, num_frames=data.dynamic_batch["num_frames"])
    log.info("dynamic batches, clips per rank by shape (T x H x W): %s", sampler.summary())
    return sampler


def build_loaders(data: DataOptions, *, seed: int, device: torch.device, train: bool = True,
                  run_dir: Path | None = None
                  ) -> tuple[Any, ResumableSampler | DynamicBatchSampler | None, Any]:
    """(train loader, its resumable sampler, val loader); the train pair is None when `train`
    is False (eval), the val loader is None when the recipe has no `data.val`."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    common = dict(num_workers=data.num_workers, seed=seed, rank=rank,
                  pin_memory=device.type == "cuda", prefetch_factor=data.prefetch_factor,
                  persistent_workers=data.persistent_workers)
    train_loader = sampler = val_loader = None
    if train:
        train_set, device_tf = build_dataset(data.train, key="data.train")
        require_labels(train_set, key="data.train")
        sampler = build_train_sampler(data, train_set, seed=seed)
        num_sample = data.train.get("num_sample", 1)  # repeated augmentation: data/repeated_aug.py
        collate = None if num_sample == 1 else RepeatedCollate(
            num_sample, set_num_sample(train_set, num_sample, key="data.train"))
        train_loader = _stream(build_loader(train_set, sampler=sampler, collate_fn=collate,
                                            **common),
                               train_set, device_tf, split="train", seed=seed, data=data,
                               device=device, run_dir=run_dir)
    if data.val:
        val_loader, _ = build_eval_loader(data, split="val", seed=seed, device=device,
                                          run_dir=run_dir)
    return train_loader, sampler, val_loader


def build_eval_loader(data: DataOptions, *, split: str, seed: int, device: torch.device,
                      run_dir: Path | None = None) -> tuple[Any, Any]:
    """(loader, dataset) of `data.val` or `data.test`: each video on one rank with all its
    views, none padded or repeated, so reduced metrics count every video once."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    eval_set, device_tf = build_dataset(getattr(data, split), key=f"data.{split}")
    require_labels(eval_set, key=f"data.{split}")  # metrics on invented labels would be wrong
    views = getattr(eval_set, "num_views", 1)  # a video's test views stay on one rank
    loader = build_loader(eval_set, batch_size=data.val_batch_size or data.batch_size,
                          sampler=ShardSampler(len(eval_set), rank=rank, world_size=world_size,
                                               group_size=views),
                          num_workers=data.num_workers, seed=seed, rank=rank,
                          pin_memory=device.type == "cuda", prefetch_factor=data.prefetch_factor,
                          persistent_workers=data.persistent_workers)
    return _stream(loader, eval_set, device_tf, split=split, seed=seed, data=data,
                   device=device, run_dir=run_dir), eval_set


def build_optimizer(node: dict[str, Any], model: nn.Module, *,
                    total_batch_size: int) -> tuple[torch.optim.Optimizer, float]:
    kwargs = {k: v for k, v in node.items() if k not in ("type", *GROUP_KEYS)}
    lr = scaled_lr(lr=kwargs.pop("lr", None), blr=node.get("blr"), total_batch_size=total_batch_size)
    groups = param_groups(model, weight_decay=kwargs.pop("weight_decay", 0.0),
                          layer_decay=node.get("layer_decay"), custom_keys=node.get("custom_keys"))
    return build_at({"type": node["type"], **kwargs}, OPTIMIZERS, key="optimizer",
                    params=groups, lr=lr), lr


def open_run_dir(run_dir: Path) -> RunDir | None:
    """Rank 0 creates the run dir and takes its lock; every rank raises if it could not."""
    run, error = None, None
    if dist.is_main():
        try:
            run = RunDir(run_dir).open()
        except ConfigError as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error is not None:
        raise ConfigError(error)
    return run


def build_trainer(cfg: dict[str, Any]) -> Trainer:
    """Check everything, then write: the recipe is validated, the run dir resolved and
    locked, the objects built and the resume decided before config.yaml and log.txt are
    written (a run that fails before leaves an existing run dir as it was)."""
    checked = validate_config(cfg)
    dry_forward(cfg, checked)
    train = dict(cfg.get("train") or {})
    data, seed = DataOptions(**cfg.get("data") or {}), int(cfg["seed"])
    run_dir = resolve_run_dir(cfg["run"])  # confined and usable; nothing written yet
    dist_opts, device = setup_distributed(cfg, resolve_device(str(train.pop("device", "auto"))))
    setup_text_log(None, enabled=dist.is_main(), defer=True)  # log.txt once the checks pass
    run = open_run_dir(run_dir)
    seed_everything(seed)

    train_loader, sampler, val_loader = build_loaders(data, seed=seed, device=device,
                                                      run_dir=run_dir)
    set_threads(train.pop("threads", "auto"), num_workers=data.num_workers)  # once data is sure

    model = build_model(cfg).to(device)
    if train.pop("channels_last", False):  # before DDP: its buckets follow the layout
        use_channels_last(model)
    total_batch = data.batch_size * dist.get_world_size() * train.get("accum_steps", 1)
    # before wrapping, so a forward that must run on real tensors (MAE) has no collectives
    summary = model_summary(model, input_shape=input_shape(cfg, checked), device=device,
                            views=num_test_views(cfg.get("data") or {}),
                            meta_model=lambda: meta_model(cfg)) if dist.is_main() else None
    model = wrap_model(model, dist_opts, device)
    if (compile_kwargs := compile_options(train.pop("compile", False))) is not None:
        compile_model(model, **compile_kwargs)  # in place: names stay unprefixed
    task = build_at(cfg["task"], TASKS, key="task").to(device)
    # after wrapping: FSDP2 replaces the parameters with sharded ones in place
    optimizer, base_lr = build_optimizer(cfg["optimizer"], parallel.unwrap(model),
                                         total_batch_size=total_batch)
    hooks = [build_at(h, HOOKS, key=f"hooks[{i}]") for i, h in enumerate(cfg.get("hooks") or [])]
    # the weights above came from `seed` on every rank; masks, drop-path and mixup now draw
    # from each rank's own stream (rank r: seed + r; rank 0 unchanged), see engine/streams.py
    streams.seed_rank_stream(seed, rank=dist.get_rank())
    schedule = cfg.get("schedule") or {}
    logger = RunLogger(run_dir, enabled=dist.is_main(), tensorboard=train.pop("tensorboard", True),
                       progress=train.pop("progress", None), trackers=build_trackers(cfg, run_dir))
    written = redact_config(cfg)  # what the run writes; `cfg` keeps the real values
    tester = build_test_stage(data, task=task, seed=seed, device=device, run_dir=run_dir,
                              checkpoint=train.pop("test_checkpoint", "last"),
                              amp=train.get("amp", "none"))
    trainer = Trainer(model=model, task=task, optimizer=optimizer, train_loader=train_loader,
                      train_sampler=sampler, val_loader=val_loader, run_dir=run_dir,
                      base_lr=base_lr, logger=logger, device=device, hooks=hooks,
                      resume=cfg.get("resume"),
                      extra_state={"config_hash": config_hash(cfg), "recipe": written,
                                   # class names and eval preprocessing: enough to predict
                                   CARD_KEY: run_card(
                                       written, train_set=train_loader.dataset,
                                       val_set=getattr(val_loader, "dataset", None))},
                      tester=tester,
                      schedule={k: v for k, v in schedule.items() if k not in SCHEDULE_KEYS},
                      **{k: v for k, v in schedule.items() if k in SCHEDULE_KEYS}, **train)
    trainer.resume_from_checkpoint()  # decided (or refused) before anything is written
    if run is not None:
        run.commit(dump_config(written))
        open_log_file(run_dir)
        write_env(run_dir, collect_env(world_size=dist.get_world_size()))
        clips = None if data.dynamic_batch else total_batch  # dynamic batches vary in clips
        write_summary(run_dir, {**summary, "clips_per_step": clips,
                                "world_size": dist.get_world_size()})
    return trainer


def run_card(recipe: dict[str, Any], *, train_set: Any, val_set: Any | None) -> dict[str, Any]:
    """The model card of a run (model_card.py): class names from the train set, preprocessing
    from the val set (the train set's, views 1, when there is no `data.val`: eval-mode
    transforms are deterministic)."""
    split = "val" if val_set is not None else "train"
    node = recipe["data"][split]
    return make_card(classes=dataset_classes(train_set), model=recipe["model"],
                     task=(recipe.get("task") or {}).get("type"),
                     clip=clip_of(val_set if val_set is not None else train_set,
                                  single_view=val_set is None),
                     transforms=node.get("transforms"),
                     device_transforms=node.get("device_transforms"), source=f"data.{split}",
                     imports=recipe.get("imports"))


def build_trackers(cfg: dict[str, Any], run_dir: Path) -> TrackerGroup | None:
    """The recipe's `trackers:` (W&B, MLflow) on rank 0, or None; nothing starts until fit."""
    options = normalize_trackers(cfg.get("trackers"))
    if not options or not dist.is_main():
        return None
    return TrackerGroup(options, run_dir=run_dir, run_name=str(cfg["run"]["name"]), recipe=cfg,
                        resume=cfg.get("resume"))


def evaluate_checkpoint(cfg: dict[str, Any]) -> dict[str, float]:
    """`tubelet eval`: load `checkpoint`'s model weights and evaluate on `data.val`.
    `checkpoint` is a checkpoint file, a run directory (its checkpoints/last.pt, as for
    `model.pretrained` and `tubelet export`) or a `.safetensors` export."""
    from tubelet.models.weights import read_state_dict, resolve_checkpoint
    dry_forward(cfg, validate_config(cfg, train_data=False))  # eval reads data.val only
    if cfg.get("checkpoint") is None:
        raise ConfigError("checkpoint: required; pass checkpoint=PATH (a checkpoint file, a run "
                          "directory or a .safetensors export)")
    path = resolve_checkpoint(str(cfg["checkpoint"]), key="checkpoint")
    data = DataOptions(**cfg.get("data") or {})
    if not data.val:
        raise ConfigError("data.val: required for eval")
    device = resolve_device(str((cfg.get("train") or {}).get("device", "auto")))
    dist_opts, device = setup_distributed(cfg, device)
    setup_text_log(None, enabled=dist.is_main())
    seed_everything(int(cfg["seed"]))
    model = build_model(cfg, load_pretrained=False)  # the checkpoint holds all the weights
    if path.suffix == ".safetensors":  # an export holds the model's tensors only
        weights = read_state_dict(path, key="checkpoint")
    else:
        weights = load_checkpoint(path, key="checkpoint").get("model")
    reason = model_mismatch(weights, {k: v.shape for k, v in model.state_dict().items()})
    if reason is not None:
        raise ConfigError(f"checkpoint: {path}: {reason}")
    model.load_state_dict(weights)
    log.info("eval: weights from %s", path)
    model = wrap_model(model.to(device), dist_opts, device)
    task = build_at(cfg["task"], TASKS, key="task")
    _, _, loader = build_loaders(data, seed=int(cfg["seed"]), device=device, train=False)
    set_threads((cfg.get("train") or {}).get("threads", "auto"), num_workers=data.num_workers)
    with parallel.eval_view(model) as view:  # each rank its own share, metrics reduced
        return run_eval(view, task.to(device), loader, device=device)


def build_test_stage(data: DataOptions, *, task: Any, seed: int, device: torch.device,
                     run_dir: Path, checkpoint: str = "last", amp: str = "none") -> Any:
    """The test stage on `data.test` (engine/testing.py), or None without one."""
    from tubelet.engine.testing import TestStage
    from tubelet.engine.trainer import AMP_DTYPES
    if not data.test:
        return None
    loader, dataset = build_eval_loader(data, split="test", seed=seed, device=device,
                                        run_dir=run_dir)
    return TestStage(loader=loader, dataset=dataset, task=task, run_dir=run_dir, device=device,
                     checkpoint=checkpoint, amp_dtype=AMP_DTYPES.get(amp), spec=data.test)

