"""Test-only tasks, loaded through a recipe's `imports: [dist_tasks]` (this folder is put on
PYTHONPATH by the tests): they stay out of the package."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import SumMetric

from tubelet import distributed as dist
from tubelet.engine.hooks import Hook
from tubelet.registry import HOOKS, TASKS
from tubelet.tasks.classification import ClassificationTask
from tubelet.tasks.mae_pretrain import MAEPretrainTask, unwrap as mae_unwrap


@TASKS.register("nan_on_rank")
class NanOnRank(ClassificationTask):
    """Classification whose loss is NaN on rank `nan_rank` at the (1-based) loss calls in
    `nan_calls`; the wall time of the first injection goes to `stamp_file`."""

    def __init__(self, num_classes: int, *, nan_rank: int = 1, nan_calls: tuple[int, ...] = (5,),
                 stamp_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.nan_rank, self.nan_calls, self.stamp_file = nan_rank, set(nan_calls), stamp_file
        self.calls = 0

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        self.calls += 1
        loss = super().loss(model, batch)
        if dist.get_rank() == self.nan_rank and self.calls in self.nan_calls:
            if self.stamp_file and not Path(self.stamp_file).exists():
                Path(self.stamp_file).write_text(str(time.time()))
            return loss * math.nan
        return loss


@TASKS.register("counting_classification")
class CountingClassification(ClassificationTask):
    """Classification that also reports how many eval samples it scored and the sum of their
    labels, reduced across ranks: proof that every sample is counted exactly once."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.num_samples, self.label_sum = SumMetric(), SumMetric()

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        super().eval_step(model, batch)
        label = batch[self.target_key]
        self.num_samples.update(torch.tensor(float(label.numel())))
        self.label_sum.update(label.sum().float())

    def compute_metrics(self) -> dict[str, float]:
        return {**super().compute_metrics(), "num_samples": float(self.num_samples.compute()),
                "label_sum": float(self.label_sum.compute())}

    def reset_metrics(self) -> None:
        super().reset_metrics()
        self.num_samples.reset()
        self.label_sum.reset()


@TASKS.register("mask_recording_mae")
class MaskRecordingMAE(MAEPretrainTask):
    """MAE pretraining that records, per rank, the mask each training step's forward draws
    (peeked with a forked RNG, so the training stream is untouched) in
    `record_dir/masks.rank<r>.pt`: a list of (step call, mask)."""

    def __init__(self, *, record_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(record_dir) / f"masks.rank{dist.get_rank()}.pt"
        self.masks: list[torch.Tensor] = []

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        video = batch[self.input_key]
        with torch.random.fork_rng(devices=[]):
            self.masks.append(mae_unwrap(model).draw_mask(video.shape[0], video.device).cpu())
        torch.save(self.masks, self.path)
        return super().loss(model, batch)


@TASKS.register("slow_eval_classification")
class SlowEvalClassification(ClassificationTask):
    """Classification whose eval batches take `eval_sleep` seconds each (a long eval); the
    wall time of the first eval batch goes to `stamp_file`."""

    def __init__(self, num_classes: int, *, eval_sleep: float = 1.0, stamp_file: str,
                 **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.eval_sleep, self.stamp_file = eval_sleep, stamp_file

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        if not Path(self.stamp_file).exists():
            Path(self.stamp_file).write_text(str(time.time()))
        time.sleep(self.eval_sleep)
        super().eval_step(model, batch)


@HOOKS.register("hold_while_file")
class HoldWhileFile(Hook):
    """From step `at_step` on, training waits while `path` exists (at most `timeout_s`): a test
    holds a run mid-way, e.g. until its trackers have started, then kills it. `reached`: a
    file created when the hold begins, so the test knows where the run is."""

    def __init__(self, path: str, at_step: int, timeout_s: float = 300.0,
                 reached: str | None = None) -> None:
        self.path, self.at_step, self.timeout_s = Path(path), at_step, timeout_s
        self.reached = reached and Path(reached)

    def after_step(self, trainer: Any) -> None:
        if self.reached and trainer.step == self.at_step and self.path.exists():
            self.reached.touch()
        deadline = time.monotonic() + self.timeout_s
        while trainer.step >= self.at_step and self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


_HELD: list[Any] = []  # the group, held past destroy_process_group as FSDP2's device mesh holds it


class _SlowFinalizer:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __del__(self) -> None:
        time.sleep(self.seconds)  # lets go of the GIL, and takes it back `seconds` later


@HOOKS.register("collective_in_flight")
class CollectiveInFlight(Hook):
    """After training, each rank leaves a gloo all-reduce in flight with the group held: its
    work and its Python tensor are dropped at once, so gloo's worker thread lets go of the
    tensor's Python object, and runs its finalizer, which takes the GIL back `sleep_s` later.
    By then the process is at its exit. An exit through the interpreter's finalization
    aborts at that point; the race a worker thread delayed by load ran into (pytorch#190489)."""

    def __init__(self, sleep_s: float = 1.0) -> None:
        self.sleep_s = sleep_s

    def after_train(self, trainer: Any) -> None:
        import torch.distributed as torch_dist
        _HELD.append(torch_dist.group.WORLD)
        tensor = torch.ones(1000)
        tensor.finalizer = _SlowFinalizer(self.sleep_s)
        torch_dist.all_reduce(tensor, async_op=True)
