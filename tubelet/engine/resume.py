"""Deciding a resume: which checkpoint continues this run, and whether it may.

The Trainer loads what these functions pick (`Trainer.load_state_dict`); they only decide, so
the rules read in one place: `resume:` null refuses a run dir that holds checkpoints, auto
takes the newest checkpoint that loads and fits, force does so despite recipe changes, restart
moves the checkpoints aside, and a PATH loads that file."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from torch import nn

from tubelet import distributed as dist
from tubelet.engine.checkpoint import (find_resumable, list_checkpoints, load_checkpoint,
                                       model_mismatch, set_aside_all)
from tubelet.recipe_diff import recipe_changes
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")


def check_state(state: dict[str, Any], *, model: nn.Module, recipe: dict[str, Any],
                force: bool) -> str | None:
    """Why `state` cannot continue a run of `model` and `recipe` (another model, not a
    training checkpoint), or None. A recipe that changed what is trained raises, unless
    `force` (resume=force)."""
    if not isinstance(state.get("trainer"), dict) or not isinstance(state.get("model"), dict):
        return "not a tubelet training checkpoint (no trainer or model state)"
    expected = {k: v.shape for k, v in model.state_dict().items()}
    mismatch = model_mismatch(state["model"], expected)
    refused, allowed = recipe_changes(state.get("recipe"), recipe)
    if mismatch:
        return mismatch + (f" (recipe: {'; '.join(refused[:3])})" if refused else "")
    if refused and not force:
        raise ConfigError(f"resume: the recipe changed what is trained ({'; '.join(refused)}); "
                          "resume=force continues anyway, resume=restart starts over, or "
                          "choose another run.name")
    for line in refused:
        log.warning("resume=force: continuing although %s", line)
    for line in allowed:
        log.info("resume: continuing with %s", line)
    return None


def check_resumable(t: dict[str, Any], *, global_batch: int, plan: Any, steps_per_epoch: int,
                    batches: str, accum_steps: int) -> None:
    """The lr schedule and the sample counter are functions of the optimizer step, so a
    resume may change the world size but must keep the global batch and steps per epoch.
    `t`: the checkpoint's trainer state; the rest: this run's."""
    if (t["global_batch"], t["batch_plan"], t["steps_per_epoch"]) == (global_batch, plan,
                                                                      steps_per_epoch):
        return
    raise ConfigError(
        f"resume: the checkpoint's global batch is {t['global_batch']} ({t['batches']} x "
        f"accum {t['accum_steps']}, {t['steps_per_epoch']} steps/epoch), this run's is "
        f"{global_batch} ({batches} x accum {accum_steps}, {steps_per_epoch} steps/epoch); "
        "set data.batch_size or train.accum_steps so they match (dynamic batches also need "
        "the same world size and data.dynamic_batch)")


def pick_resume(*, resume: str | None, ckpt_dir: Path, run_dir: Path,
                check: Callable[[dict[str, Any]], str | None]
                ) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from and its state, or None to start from scratch; applies
    resume=null's refusal and resume=restart's move first. A collective: rank 0 picks the
    file and every rank loads that one, whatever it finds itself. `check`: `check_state`
    bound to this run."""
    if resume is None:
        if list_checkpoints(ckpt_dir) or (ckpt_dir / "last.pt").exists():
            raise ConfigError(f"resume: {ckpt_dir} already holds checkpoints; pass "
                              "resume=auto to continue, resume=restart to start over, or "
                              "choose another run.name")
        return None
    if resume == "restart":
        if dist.is_main() and (ckpt_dir.is_dir() or (run_dir / "metrics.jsonl").exists()):
            log.info("resume=restart: previous checkpoints and metrics moved to %s",
                     set_aside_all(ckpt_dir, metrics=run_dir / "metrics.jsonl"))
        dist.barrier()
        return None
    if resume in ("auto", "force"):
        found, error = None, None
        if dist.is_main():
            try:
                found = find_resumable(ckpt_dir, check=check)
            except ConfigError as e:
                error = str(e)
        path, error = dist.broadcast_object((found and found[0], error))
        if error is not None:
            raise ConfigError(error)
        if path is None:
            log.info("resume=%s: no checkpoint in %s, starting from scratch", resume, ckpt_dir)
            return None
        return path, (found[1] if found else load_checkpoint(path))
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"resume: checkpoint {str(path)!r} not found")
    state = load_checkpoint(path, key="resume")
    reason = check(state)
    if reason is not None:
        raise ConfigError(f"resume: {path}: {reason}")
    return path, state
