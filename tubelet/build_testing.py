"""`tubelet test`: build what the recipe's test stage needs around a saved checkpoint, run it
and write the results into the recipe's run dir (the stage itself: engine/testing.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tubelet import distributed as dist
from tubelet.build import (DataOptions, build_at, build_model, build_test_stage, dry_forward,
                           open_run_dir, resolve_device, seed_everything, setup_distributed,
                           validate_config, wrap_model)
from tubelet.engine.threads import set_threads
from tubelet.loggers import RunLogger, open_log_file, setup_text_log
from tubelet.registry import TASKS, ConfigError
from tubelet.rundir import resolve_run_dir


def run_test(cfg: dict[str, Any]) -> dict[str, float]:
    """`tubelet test`: evaluate a checkpoint on `data.test` and write the test results into
    this recipe's run dir (`checkpoint=`: a file, a run dir or a .safetensors export; default:
    the run dir's checkpoints/<train.test_checkpoint>.pt)."""
    from tubelet.engine.testing import load_test_weights, checkpoint_to_test
    dry_forward(cfg, validate_config(cfg, train_data=False))  # test reads data.test only
    data, seed = DataOptions(**cfg.get("data") or {}), int(cfg["seed"])
    if not data.test:
        raise ConfigError("data.test: required for test (a dataset node, usually multi-view)")
    train = cfg.get("train") or {}
    run_dir = resolve_run_dir(cfg["run"])
    choice = train.get("test_checkpoint", "last")
    ckpt = checkpoint_to_test(cfg.get("checkpoint"), run_dir=run_dir, choice=choice)
    dist_opts, device = setup_distributed(cfg, resolve_device(str(train.get("device", "auto"))))
    setup_text_log(None, enabled=dist.is_main(), defer=True)
    run = open_run_dir(run_dir)
    seed_everything(seed)
    model = build_model(cfg, load_pretrained=False)  # the checkpoint holds all the weights
    step = load_test_weights(model, ckpt)
    model = wrap_model(model.to(device), dist_opts, device)
    task = build_at(cfg["task"], TASKS, key="task").to(device)
    stage = build_test_stage(data, task=task, seed=seed, device=device, run_dir=run_dir,
                             checkpoint=choice, amp=train.get("amp", "none"))
    set_threads(train.get("threads", "auto"), num_workers=data.num_workers)
    if run is not None:
        open_log_file(run_dir)
    logger = RunLogger(run_dir, enabled=dist.is_main(), tensorboard=train.get("tensorboard", True),
                       progress=False)
    logger.start(total_steps=0, step=step, repair=False)  # rows of the training run stay
    try:
        return stage.run(model, step=step, epoch=_epoch_of(run_dir, step), logger=logger,
                         checkpoint=ckpt, checkpoint_step=step, digest=None)
    finally:
        logger.close()


def _epoch_of(run_dir: Path, step: int) -> float:
    """The epoch of the last metrics row at `step` (for the test row), else 0."""
    path, epoch = run_dir / "metrics.jsonl", 0.0
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step") == step and "epoch" in row:
            epoch = row["epoch"]
    return epoch
