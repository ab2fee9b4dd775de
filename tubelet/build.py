"""From a resolved recipe (a plain dict) to built objects. Everything is validated first, against
the registries and the signatures of what each node feeds, before anything heavy is built.
This is the one place that reads the recipe's sections; below it, components take plain keywords.
The checks live in `build_check`, the datasets and loaders in `build_data`, the `tubelet test`
assembly in `build_testing`; this module builds a training run and `tubelet eval`.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tubelet import distributed as dist
from tubelet.build_check import (DataOptions, DistributedOptions, build_at, dry_forward,
                                 meta_model, model_spec, validate_config)
from tubelet.build_data import build_eval_loader, build_loaders, num_test_views
from tubelet.config import config_hash, dump_config
from tubelet.engine import parallel, streams
from tubelet.engine.checkpoint import load_checkpoint, model_mismatch
from tubelet.engine.optim import GROUP_KEYS, param_groups
from tubelet.engine.schedule import scaled_lr
from tubelet.engine.summary import model_summary, write_summary
from tubelet.engine.switches import compile_model, set_grad_checkpointing, use_channels_last
from tubelet.engine.evaluate import run_eval
from tubelet.engine.threads import set_threads
from tubelet.engine.trainer import Trainer
from tubelet.envinfo import collect_env, write_env
from tubelet.loggers import RunLogger, open_log_file, setup_text_log
from tubelet.model_card import CARD_KEY, clip_of, dataset_classes, make_card
from tubelet.redact import redact_config
from tubelet.rundir import RunDir, resolve_run_dir
from tubelet.trackers import TrackerGroup
from tubelet.trackers import normalize as normalize_trackers
from tubelet.registry import HOOKS, MODELS, OPTIMIZERS, TASKS, ConfigError
from tubelet.validate_cross import input_shape
from tubelet.validate_switches import check_decay, compile_options
# Reached through `tubelet.build` by the CLI, visualize, predict and the tests: the build API
# keeps one address while its checks (build_check) and data (build_data) have their own files.
from tubelet.build_check import _register_builtins, save_schema, schema  # noqa: F401
from tubelet.build_data import (DATA_TRANSFORM_KEYS, build_dataset,  # noqa: F401
                                build_train_sampler, build_transforms)

log = logging.getLogger("tubelet")
SCHEDULE_KEYS = {"warmup_epochs", "min_lr"}  # Trainer keywords fed by `schedule:`; the rest
# of the section (type, milestones, ...) goes to the Trainer's `schedule` (engine/schedule.py)


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


def build_optimizer(node: dict[str, Any], model: nn.Module, *,
                    total_batch_size: int) -> tuple[torch.optim.Optimizer, float]:
    kwargs = {k: v for k, v in node.items() if k not in ("type", *GROUP_KEYS)}
    lr = scaled_lr(lr=kwargs.pop("lr", None), blr=node.get("blr"), total_batch_size=total_batch_size)
    check_decay(node, lr=lr)  # blr's peak is known only now
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
