"""The test stage: one evaluation of a chosen checkpoint on `data.test`, after training
(`Trainer.fit`) or on its own (`tubelet test`).

VideoMAE, SlowFast and MMAction2 validate cheaply during training (one view per video) and test
once at the end with every view. Here `data.val` is the cheap one and `data.test` the full one;
`train.test_checkpoint` picks the weights: `last` (the model at the end of training, what
VideoMAE's `final_test` scores) or `best` (checkpoints/best.pt, chosen on `data.val`).

The pass is `run_eval`'s, so it is exact across ranks like eval: every video goes to one rank
with all its views, none is padded or repeated, and the task's states are gathered before rank 0
writes `test/*` rows to metrics.jsonl and TensorBoard, the files of `engine.results`, and last
`test_results.json`, which also marks the test done. A run killed after training but before
that file exists tests on resume; a finished run finds the file, naming the very checkpoint it
tested (its sha256), and does not test again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet import distributed as dist
from tubelet.engine import parallel
from tubelet.engine.checkpoint import load_checkpoint, model_mismatch
from tubelet.engine.evaluate import EvalAbandoned, run_eval
from tubelet.engine.guard import Preempted
from tubelet.engine.results import class_names, per_class_summary, video_paths, write_report
from tubelet.loggers import RunLogger
from tubelet.registry import ConfigError
from tubelet.rundir import write_atomic
from tubelet.tasks.base import Task

log = logging.getLogger("tubelet")
TEST_CHECKPOINTS = ("last", "best")
RESULTS = "test_results.json"
REPORT_DIR = "test"


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


class TestStage:
    """Evaluates a model on the test split and writes the results (see the module docstring).
    `dataset` is the test loader's dataset: its `classes` and video paths name the rows."""

    def __init__(self, *, loader: DataLoader, dataset: Any, task: Task, run_dir: str | Path,
                 device: torch.device, checkpoint: str = "last",
                 amp_dtype: torch.dtype | None = None, spec: Any = None) -> None:
        if checkpoint not in TEST_CHECKPOINTS:
            raise ConfigError(f"train.test_checkpoint: unknown {checkpoint!r}; choose one of "
                              f"{list(TEST_CHECKPOINTS)}")
        self.loader, self.dataset, self.task = loader, dataset, task
        self.run_dir, self.device, self.checkpoint = Path(run_dir), device, checkpoint
        self.amp_dtype = amp_dtype
        # what was asked (the data.test node, the checkpoint choice): another test of the same
        # checkpoint is not the one recorded
        text = json.dumps([spec, checkpoint], sort_keys=True, default=str)
        self.spec_hash = hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ after fit
    def after_fit(self, trainer: Any) -> dict[str, float]:
        """The final test of a training run; every rank calls it after the last checkpoint,
        inside the trainer's signal handling (a stop signal abandons the test: exit 75/130,
        and the resumed run tests). Returns the `test/*` metrics, recorded ones when this
        checkpoint was tested already."""
        path = trainer.ckpt_dir / f"{self.checkpoint}.pt"
        if not path.is_file():  # best.pt exists once data.val was evaluated (validated)
            raise ConfigError(f"train.test_checkpoint: {self.checkpoint}: {path} not found")
        digest = file_sha256(path) if dist.is_main() else None
        done = dist.broadcast_object(dist.is_main() and self.tested(digest))
        if done:
            log.info("test: %s was tested already (%s); not repeated", path,
                     self.run_dir / RESULTS)
            return dist.broadcast_object(self.relog(trainer.logger) if dist.is_main() else None)
        bad = getattr(self.loader, "bad_data", None)
        if bad is not None and bad not in trainer.guard.bad_data:  # agreed like eval's
            bad.deferred = True
            trainer.guard.bad_data.append(bad)
        model, backup, step = trainer.model, None, trainer.step
        if self.checkpoint == "best":  # every rank loads the same file; its own shard (FSDP)
            state = load_checkpoint(path, key="train.test_checkpoint")
            step = int(state["trainer"]["step"])
            backup = {k: v.detach().clone() for k, v in parallel.unwrap(model).state_dict().items()}
            parallel.load_full_state(model, None, model_state=state["model"], optimizer_state=None)
        try:
            return self.run(model, step=trainer.step, epoch=trainer.epoch, logger=trainer.logger,
                            checkpoint=path, checkpoint_step=step, digest=digest,
                            should_stop=trainer.guard.poll_stop)
        except EvalAbandoned:  # the checkpoint of this step is on disk: nothing to save
            signal = trainer.guard.signals.received or "signal on another rank"
            raise Preempted(trainer.step, signal, interrupted=trainer.guard.interrupted) from None
        finally:
            if backup is not None:  # the trainer's model is the last one again
                parallel.unwrap(model).load_state_dict(backup)

    def tested(self, digest: str | None) -> bool:
        """Rank 0: whether test_results.json records this test of the checkpoint with `digest`."""
        try:
            record = json.loads((self.run_dir / RESULTS).read_text())
            return (record.get("checkpoint_sha256"), record.get("test_spec")) == \
                (digest, self.spec_hash)
        except (OSError, ValueError, AttributeError):
            return False

    def relog(self, logger: RunLogger) -> dict[str, float]:
        """Rank 0: the recorded metrics. A run killed between test_results.json and its
        metrics row gets the row now, once."""
        results = json.loads((self.run_dir / RESULTS).read_text())
        path = self.run_dir / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        rows = [json.loads(line) for line in lines]
        if not any(r.get("step") == results["step"] and any(k.startswith("test/") for k in r)
                   for r in rows):
            logger.log(results["metrics"], step=results["step"], epoch=results["epoch"])
        return results["metrics"]

    # ------------------------------------------------------------------ the pass
    def run(self, model: nn.Module, *, step: int, epoch: float, logger: RunLogger,
            checkpoint: Path, checkpoint_step: int, digest: str | None,
            should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """Evaluate `model` (any strategy) on the test split and write everything; a
        collective: every rank calls it, rank 0 writes."""
        with parallel.eval_view(model) as view:
            metrics = run_eval(view, self.task, self.loader, device=self.device,
                               amp_dtype=self.amp_dtype, should_stop=should_stop, prefix="test")
        results = self.task.test_results()  # gathered over all ranks: a collective
        log.info("test (%s, step %d): %s", checkpoint, checkpoint_step,
                 " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        error = None
        if dist.is_main():
            try:
                self.write(metrics, results, step=step, epoch=epoch, logger=logger,
                           checkpoint=checkpoint, checkpoint_step=checkpoint_step,
                           digest=digest or file_sha256(checkpoint))
            except ConfigError as e:  # a full disk: every rank stops with the one line
                error = str(e)
        error = dist.broadcast_object(error)  # also the barrier: the files are complete
        if error is not None:
            raise ConfigError(error)
        return metrics

    def write(self, metrics: dict[str, float], results: dict[str, Any] | None, *, step: int,
              epoch: float, logger: RunLogger, checkpoint: Path, checkpoint_step: int,
              digest: str) -> None:
        """Rank 0: the report files, then test_results.json (the mark of a finished test),
        then the metrics row and the confusion picture for the trackers."""
        record: dict[str, Any] = {"step": step, "epoch": epoch, "metrics": metrics,
                                  "checkpoint": _shown(checkpoint, self.run_dir),
                                  "checkpoint_step": checkpoint_step, "checkpoint_sha256": digest,
                                  "test_spec": self.spec_hash}
        image = None
        if results is not None:
            classes = None
            if results["kind"] == "classification":
                classes = class_names(self.dataset, results["scores"].shape[1])
                record["per_class"] = per_class_summary(results, classes)
            record["num_videos"] = len(results["id"])
            record["files"], image = write_report(self.run_dir / REPORT_DIR, results,
                                                  classes=classes,
                                                  path_of=video_paths(self.dataset))
        write_atomic(self.run_dir / RESULTS, (json.dumps(record, indent=2) + "\n").encode())
        logger.log(metrics, step=step, epoch=epoch)
        if image is not None:
            logger.log_image("test/confusion_matrix", image, step=step)
        log.info("test results: %s", self.run_dir / RESULTS)


def _shown(path: Path, run_dir: Path) -> str:
    """The checkpoint as recorded: relative to the run dir when inside it."""
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def checkpoint_to_test(checkpoint: str | None, *, run_dir: Path, choice: str) -> Path:
    """`tubelet test`'s weights: `checkpoint=` a file, or a run directory (its
    checkpoints/<train.test_checkpoint>.pt); without it, this recipe's run dir's."""
    if choice not in TEST_CHECKPOINTS:
        raise ConfigError(f"train.test_checkpoint: unknown {choice!r}; choose one of "
                          f"{list(TEST_CHECKPOINTS)}")
    key = "checkpoint" if checkpoint is not None else "run.dir"
    path = Path(checkpoint) if checkpoint is not None else run_dir
    if path.is_dir():
        found = path / "checkpoints" / f"{choice}.pt"
        if not found.is_file():
            raise ConfigError(f"{key}: {str(path)!r} has no checkpoints/{choice}.pt "
                              f"(train.test_checkpoint: {choice}); pass checkpoint=PATH")
        return found
    if not path.is_file():
        raise ConfigError(f"checkpoint: {str(path)!r} not found")
    return path


def load_test_weights(model: nn.Module, path: Path) -> int:
    """Load a checkpoint file's (or a .safetensors export's) model weights into `model`
    strictly; returns the checkpoint's training step (0 for an export)."""
    from tubelet.models.weights import read_state_dict
    step = 0
    if path.suffix == ".safetensors":
        weights = read_state_dict(path, key="checkpoint")
    else:
        state = load_checkpoint(path, key="checkpoint")
        weights = state.get("model")
        step = int((state.get("trainer") or {}).get("step", 0))
    reason = model_mismatch(weights, {k: v.shape for k, v in model.state_dict().items()})
    if reason is not None:
        raise ConfigError(f"checkpoint: {path}: {reason}")
    model.load_state_dict(weights)
    return step
