"""Whether a stage is finished and what it measured, read from its run dir alone (never from a
time stamp or experiment.json, which only reports)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tubelet.experiment.stages import Stage


def finished(stage: Stage) -> bool:
    """What the stage's run dir says. train: the last checkpoint completed the schedule (its
    epoch is the recipe's train.epochs) or stopped early, and, when the recipe has a data.test
    that fit evaluates at its end, test_results.json is there. Other commands: their result
    file is there."""
    if stage.command != "train":
        return stage.result_file.is_file()
    state = _last_trainer_state(stage.run_dir)
    if state is None:
        return False
    from tubelet.engine.early_stop import stops  # noqa: PLC0415
    done = state["epoch"] >= stage.epochs or (
        stage.patience is not None and stops(state.get("early_stop"), patience=stage.patience))
    tested = not stage.has_test or (stage.run_dir / "test_results.json").is_file()
    return bool(done and tested)


def _last_trainer_state(run_dir: Path) -> dict[str, Any] | None:
    """The trainer counters of checkpoints/last.pt; memory-mapped, so a multi-GB checkpoint
    costs only its small pickle. None when there is none or it does not load (the stage's
    own resume=auto then falls back, as it does for any run)."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    import torch  # noqa: PLC0415
    try:
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file means "not finished"
        return None
    trainer = state.get("trainer") if isinstance(state, dict) else None
    return trainer if isinstance(trainer, dict) and "epoch" in trainer else None


def final_metrics(stage: Stage) -> dict[str, Any]:
    """train: the last value of every val/ and test/ key in metrics.jsonl, the step and epoch
    it ended at, the best value of train.best_metric and whether it stopped early; other
    commands: their result file."""
    if stage.command != "train":
        try:
            data = json.loads(stage.result_file.read_text())
        except (OSError, ValueError):
            return {}
        # test_results.json nests them beside the checkpoint it tested and its report files
        return data["metrics"] if isinstance(data.get("metrics"), dict) else data
    out: dict[str, Any] = {}
    try:
        lines = (stage.run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        out.update({k: v for k, v in row.items() if k.startswith(("val/", "test/"))})
    state = _last_trainer_state(stage.run_dir)
    if state is not None:
        out.update(step=state.get("step"), epoch=state.get("epoch"), best=state.get("best"))
        early = state.get("early_stop")
        out["stopped_early"] = (bool(early) and stage.patience is not None
                                and state["epoch"] < stage.epochs)
    return out
