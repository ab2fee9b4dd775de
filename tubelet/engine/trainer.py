"""The Trainer: `fit()` reads as a list of steps; checkpointing, eval and logging are inline."""
from __future__ import annotations

import contextlib
import itertools
import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet import distributed as dist
from tubelet.data.dynamic_batch import DynamicBatchSampler
from tubelet.data.loader import ResumableSampler
from tubelet.engine import amp as amp_scaling, parallel, streams
from tubelet.engine.async_save import CheckpointWriter
from tubelet.engine.checkpoint import rng_state, set_rng_state
from tubelet.engine.early_stop import EarlyStopping
from tubelet.engine.guard import NAN_POLICIES, Preempted, StepGuard
from tubelet.engine.hooks import Hook
from tubelet.engine.evaluate import EvalAbandoned, run_eval, to_device
from tubelet.engine.meters import Meters
from tubelet.engine.nan_check import DeviceNanCheck
from tubelet.engine.optim import takes_found_inf
from tubelet.engine.profile import StepProfiler, check_profile
from tubelet.engine.resume import check_resumable, check_state, pick_resume
from tubelet.engine.schedule import lr_schedule
from tubelet.engine.train_log import TrainLog
from tubelet.loggers import RunLogger
from tubelet.registry import ConfigError
from tubelet.tasks.base import Task

log = logging.getLogger("tubelet")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer:
    def __init__(self, *, model: nn.Module, task: Task, optimizer: torch.optim.Optimizer,
                 train_loader: DataLoader, train_sampler: ResumableSampler | DynamicBatchSampler,
                 val_loader: DataLoader | None, run_dir: str | Path, base_lr: float,
                 logger: RunLogger, device: torch.device, hooks: Iterable[Hook] = (),
                 resume: str | None = None, epochs: int = 1, warmup_epochs: float = 0.0,
                 min_lr: float = 0.0, accum_steps: int = 1, clip_grad: float | None = None,
                 amp: str = "none", eval_interval: int = 1, checkpoint_interval: int = 0,
                 keep_last: int = 2, log_interval: int = 10, best_metric: str = "val/acc1",
                 best_mode: str = "max", nan_guard: str = "stop", nan_skip_limit: int = 3,
                 fp16_init_scale: float = 2.0 ** 16, async_checkpoint: bool = False,
                 early_stop: dict | None = None, profile: dict | None = None,
                 extra_state: dict[str, Any] | None = None, tester: Any = None,
                 schedule: dict[str, Any] | None = None) -> None:
        if amp not in AMP_DTYPES:
            raise ConfigError(f"train.amp: unknown {amp!r}; choose one of {list(AMP_DTYPES)}")
        if amp == "fp16" and device.type != "cuda":  # torch's GradScaler runs on CPU too
            log.warning("train.amp: fp16 on %s is slow and meant for tests; use bf16", device.type)
        if not fp16_init_scale > 0:
            raise ConfigError(f"train.fp16_init_scale: must be > 0, got {fp16_init_scale}")
        if keep_last < 1 or accum_steps < 1 or log_interval < 1:
            raise ConfigError("train: keep_last, accum_steps and log_interval must be >= 1")
        if best_mode not in ("max", "min"):
            raise ConfigError(f"train.best_mode: expected 'max' or 'min', got {best_mode!r}")
        if nan_guard not in NAN_POLICIES:
            raise ConfigError(f"train.nan_guard: unknown {nan_guard!r}; choose one of {list(NAN_POLICIES)}")
        if epochs < 1 or eval_interval < 1 or (clip_grad is not None and not clip_grad > 0):
            # clip_grad <= 0 would scale every gradient by a negative factor: gradient ascent
            raise ConfigError("train: epochs and eval_interval must be >= 1, clip_grad > 0 or null")
        self.model, self.task, self.optimizer = model, task, optimizer
        self.train_loader, self.train_sampler, self.val_loader = train_loader, train_sampler, val_loader
        self.run_dir, self.ckpt_dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.logger, self.device, self.hooks, self.resume = logger, device, list(hooks), resume
        self.epochs, self.accum_steps, self.clip_grad = epochs, accum_steps, clip_grad
        self.eval_interval, self.checkpoint_interval = eval_interval, checkpoint_interval
        self.keep_last, self.log_interval = keep_last, log_interval
        self.best_metric, self.best_mode = best_metric, best_mode
        self.extra_state = extra_state or {}
        if early_stop is not None and val_loader is None:
            raise ConfigError("train.early_stop: needs data.val to evaluate train.best_metric")
        # a hook the Trainer holds itself: it decides after every hook's metrics (engine/early_stop.py)
        self.early_stop = None if early_stop is None else EarlyStopping(
            **early_stop, metric=best_metric, mode=best_mode)
        self.tester = tester  # engine.testing.TestStage: the final test on data.test, or None
        self.amp_dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(device.type, init_scale=fp16_init_scale,
                                           enabled=amp == "fp16")
        self.overflow_steps = 0  # fp16 steps skipped by the loss scaler, over all ranks alike
        self.guard = StepGuard(policy=nan_guard, skip_limit=nan_skip_limit, device=device)
        # the bad-file limit is agreed at the guard's per-step check, not raised by one rank
        self.guard.bad_data = [loader.bad_data for loader in (train_loader, val_loader)
                               if getattr(loader, "bad_data", None) is not None]
        for bad in self.guard.bad_data:
            bad.deferred = True
        # the NaN check decided on the device and read at the next log (engine/nan_check.py);
        # under fp16 the GradScaler owns the optimizer's found_inf, so that checks per step
        self.nan_check = (DeviceNanCheck(self.guard, device=device,
                                         world_size=dist.get_world_size())
                          if nan_guard != "off" and amp != "fp16" and takes_found_inf(optimizer)
                          else None)
        self._autocast = (contextlib.nullcontext if self.amp_dtype is None else
                          lambda: torch.autocast(device.type, dtype=self.amp_dtype))
        # train_step's fast path: nothing to autocast, scale or accumulate
        self._plain = self.amp_dtype is None and accum_steps == 1
        self._move_batches = device.type != "cpu"
        # the task's per-step callback, when it has one (MoCo's momentum update)
        self._task_after_step = (task.after_step if type(task).after_step is not Task.after_step
                                 else None)
        self._params: list[nn.Parameter] | None = None  # trainable, cached at the first step
        self._no_sync = getattr(model, "no_sync", None)  # DDP's; looked up once, not per step
        # rank 0 writes the checkpoints; in the background the loop waits only for the copy.
        # The logger's bound method, not a lambda over self: a Trainer in a reference cycle
        # outlives fit()'s exception, its loader workers are then reaped only at interpreter
        # exit, and that hung after a Ctrl-C (tests/engine/test_trainer.py)
        self._writer = CheckpointWriter(self.ckpt_dir, keep_last=keep_last,
                                        in_background=async_checkpoint,
                                        before_write=logger.sync)

        self.world_size = dist.get_world_size()
        # what one optimizer step consumes over all ranks (samples, or pixels for dynamic
        # batches); a resume must keep it (see engine/resume.py: check_resumable)
        self.global_batch = train_sampler.global_batch * accum_steps
        # micro-batches per epoch: a whole number of steps; dynamic plans differ per epoch
        self.micro = [train_sampler.num_batches(e) // accum_steps * accum_steps
                      for e in range(epochs)]
        if min(self.micro, default=1) == 0:
            raise ConfigError(f"data.batch_size: {train_sampler.describe()} x accum_steps "
                              f"{accum_steps} exceeds the {train_sampler.num_samples} samples")
        self.steps_per_epoch = self.micro[0] // accum_steps if epochs else 0
        self.total_steps = sum(self.micro) // accum_steps
        # the lr of each step: `schedule:`'s type and shape keys beside warmup_epochs and min_lr
        self.lr_at = lr_schedule(base_lr=base_lr, total_steps=self.total_steps, epochs=epochs,
                                 warmup_epochs=warmup_epochs, min_lr=min_lr, **(schedule or {}))
        window = check_profile(profile, total_steps=self.total_steps)  # {start, steps}
        self._profiler = window and StepProfiler(start=window[0], steps=window[1],
                                                 run_dir=self.run_dir, device=device,
                                                 rank=dist.get_rank(), world_size=self.world_size)
        # Counters: optimizer steps, finished epochs, micro-batches done in the current epoch.
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: float | None = None
        self.metrics: dict[str, float] = {}
        self._meters = Meters(device)
        loader = getattr(train_loader, "loader", train_loader)  # under the BatchStream
        self._train_log = TrainLog(num_workers=getattr(loader, "num_workers", 0),
                                   world_size=self.world_size)
        self._step_loss = torch.zeros((), device=device)  # summed over a step's micro-batches

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        self.resume_from_checkpoint()
        self.logger.start(total_steps=self.total_steps, step=self.step)
        self.logger.advance(step=self.step, epoch=self.epoch, epochs=self.epochs)
        try:  # the progress bar is closed on every way out: done, preempted, error, Ctrl-C
            return self._fit()
        finally:
            if self._profiler:
                self._profiler.close()
            self._write_rows_taken()
            self._writer.close()  # on an error's way out: let a started write commit
            self.logger.close()

    def _fit(self) -> dict[str, float]:
        for hook in self.hooks:
            hook.before_train(self)
        # SIGTERM/SIGUSR1/SIGINT now mean "save at the end of this step (or eval batch) and exit"
        with self.guard.signals:
            if self._profiler:
                self._profiler.at_step(self.step)
            while self.epoch < self.epochs and not self.stopped_early:
                self.model.train()
                # a resumed epoch starts at the first batch the killed run had not trained on
                self.train_sampler.set_epoch(self.epoch, batches_done=self.batch_in_epoch)
                remaining = self.micro[self.epoch] - self.batch_in_epoch
                self._meters.tick()
                for batch in itertools.islice(self.train_loader, remaining):
                    self._meters.data_done()
                    stepped = self.train_step(batch)
                    self._meters.compute_done(stepped=stepped)
                    if not stepped:
                        continue
                    if self._task_after_step:
                        self._task_after_step(self.model, step=self.step,
                                              total_steps=self.total_steps)
                    for hook in self.hooks:
                        hook.after_step(self)
                    if self._profiler and self._profiler.at_step(self.step):
                        self._meters.tick()  # writing the trace is neither data wait nor a step
                    self.logger.advance(step=self.step, epoch=self.epoch, epochs=self.epochs)
                    if self.step % self.log_interval == 0:
                        self.log_train()
                    if (self.checkpoint_interval and self.step % self.checkpoint_interval == 0
                            and self.batch_in_epoch < self.micro[self.epoch]):
                        self.save_checkpoint()
                        self._meters.tick()  # the save is neither data wait nor a step's time
                    if self.guard.stop_requested:  # all ranks agreed on it, at this same step
                        self.preempt()
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                is_best = False
                # the last epoch is always evaluated, so a run never ends without metrics
                last = self.epoch == self.epochs
                if self.val_loader is not None and (self.epoch % self.eval_interval == 0 or last):
                    self.metrics = self.evaluate()
                    self.logger.log(self.metrics, step=self.step, epoch=self.epoch)
                    for tag, image in self.task.eval_images().items():  # MAE reconstructions
                        self.logger.log_image(tag, image, step=self.step)
                    is_best = self.update_best(self.metrics)
                    if self.early_stop is not None:  # agreed across ranks, saved just below
                        self.early_stop.after_eval(self, self.metrics)
                self.save_checkpoint(is_best=is_best)
            # the last checkpoint is committed before it is tested and before the run ends
            self.wait_for_save()
            if self.tester is not None:  # after the last checkpoint; once (engine/testing.py)
                self.metrics = {**self.metrics, **self.tester.after_fit(self)}
        for hook in self.hooks:
            hook.after_train(self)
        return self.metrics

    def train_step(self, batch: dict[str, Any]) -> bool:
        """Forward and backward one micro-batch; step the optimizer when accumulation is
        complete. Returns whether the optimizer stepped."""
        if self._move_batches:  # the loader's tensors are on the CPU
            batch = to_device(batch, self.device)
        self.batch_in_epoch += 1
        boundary = self.batch_in_epoch % self.accum_steps == 0
        # Every Python call between the model's kernels costs microseconds (cold caches): the
        # common case, fp32 with a step per micro-batch, enters no context and scales nothing.
        if self._plain:
            loss = self.task.loss(self.model, batch)
            loss.backward()
        else:  # DDP's no_sync skips the gradient all-reduce on micro-batches that do not step
            no_sync = self._no_sync if self._no_sync and not boundary else contextlib.nullcontext
            with no_sync():
                with self._autocast():
                    loss = self.task.loss(self.model, batch)
                # loss / 1 is loss exactly: skip the op when not accumulating
                loss_scaled = loss / self.accum_steps if self.accum_steps > 1 else loss
                self.scaler.scale(loss_scaled).backward()
        loss = loss.detach()
        if loss.dtype != torch.float32:  # a call, even a no-op one, costs a dispatch
            loss = loss.float()
        self._meters.add_loss(loss)
        # a new tensor per step (the device NaN check keeps it until its next read)
        first = (self.batch_in_epoch - 1) % self.accum_steps == 0
        self._step_loss = loss if first else self._step_loss + loss
        if not boundary:
            return False
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        if self.nan_check is not None:
            self._device_checked_update()
            return True
        overflow = amp_scaling.unscale(self.scaler, self.optimizer)  # None without fp16
        grad_norm = self.grad_norm(scaled=overflow is not None)
        # all ranks agree here, before the update, on NaN/inf anywhere, on an fp16 overflow
        # anywhere and on a stop signal
        apply = self.guard.check(step=self.step, loss=self._step_loss, grad_norm=grad_norm,
                                 overflow=overflow)
        if self.guard.overflow:  # every rank skips this update and lowers the scale alike
            amp_scaling.mark_overflow(self.scaler, self.optimizer)
            self.overflow_steps += 1
            log.info("fp16 overflow at step %d: update skipped, loss scale lowered from %g "
                     "(%d overflow steps)", self.step, self.scaler.get_scale(), self.overflow_steps)
        if apply:
            self.scaler.step(self.optimizer)  # skips the update itself on an overflow
        self.scaler.update()  # a no-op without fp16; else it closes the step unscale_ opened
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return True

    def _device_checked_update(self) -> None:
        """Clip, check and step with no device sync: a non-finite loss or gradient sets the
        optimizer's `found_inf` on the device and the update is skipped there (on every
        rank alike); the guard reports it at the next log (`settle_nan_check`), or at once on
        one CPU process."""
        params = self._params or self._trainable()
        if self.clip_grad is not None:  # the norm clipping computes says it all
            norm = parallel.full_tensor(nn.utils.clip_grad_norm_(params, self.clip_grad))
            self._meters.grad_norm = norm
            grads = [norm]
        else:
            grads = [g for p in params if (g := p.grad) is not None]
        if self.nan_check.host_readable:
            # one CPU process: reading the flag costs nothing, and not calling step() skips
            # the fused kernels' found_inf bookkeeping (a kernel per group per step)
            if self.nan_check.check_now(step=self.step, loss=self._step_loss, grads=grads):
                self.optimizer.step()
        else:
            found = self.nan_check.check(step=self.step, loss=self._step_loss, grads=grads)
            self.optimizer.found_inf = found
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # only this step's; a GradScaler sets its own
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def settle_nan_check(self) -> None:
        """Read the device NaN flags since the last read and apply the guard's policy (may
        raise NonFiniteError): before every log line, checkpoint and evaluation."""
        if self.nan_check is not None:
            self.nan_check.settle()

    def grad_norm(self, *, scaled: bool = False) -> torch.Tensor | None:
        """Clip the (unscaled) gradients; the norm for the guard, or None. None when `scaled`
        (fp16 loss scaling): an inf norm there is an overflow, the GradScaler's business."""
        params = self._trainable()
        if self.clip_grad is not None:  # clip_grad_norm_ passes over parameters without grads
            norm = parallel.full_tensor(nn.utils.clip_grad_norm_(params, self.clip_grad))
            self._meters.grad_norm = norm
            return None if scaled else norm
        if self.guard.policy == "off" or scaled:
            return None
        return parallel.full_tensor(nn.utils.get_total_norm(
            [g for p in params if (g := p.grad) is not None]))

    def _trainable(self) -> list[nn.Parameter]:
        """The parameters that train, listed once (a walk over the modules costs per step)."""
        if self._params is None:
            self._params = [p for p in self.model.parameters() if p.requires_grad]
        return self._params

    def evaluate(self) -> dict[str, float]:
        """Evaluate after an epoch. A stop signal is agreed between eval batches: the eval is
        abandoned and the checkpoint saved as at the end of the epoch's training, so a resume
        runs this eval again (`preempt` raises)."""
        self.settle_nan_check()  # never evaluate weights past a step the guard stops at
        self._train_log.flush(self.logger)  # the train rows before the eval's, shown during it
        rng = rng_state()  # a resumed eval must draw what this one would have
        try:
            with parallel.eval_view(self.model) as model:  # forwards with no collectives inside
                metrics = run_eval(model, self.task, self.val_loader, device=self.device,
                                   amp_dtype=self.amp_dtype, should_stop=self.guard.poll_stop)
            log.info("eval epoch %d/%d step %d: %s", self.epoch, self.epochs, self.step,
                     " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            for hook in self.hooks:  # the EMA hook's eval polls the same way
                hook.after_eval(self, metrics)
        except EvalAbandoned:
            assert self.batch_in_epoch == 0 and self.epoch > 0, "eval runs after an epoch"
            self.epoch -= 1
            self.batch_in_epoch = self.micro[self.epoch]
            set_rng_state(rng)
            self.preempt()
        return metrics

    # ------------------------------------------------------------------ pieces of the loop
    def log_train(self) -> None:
        """The only place a training step syncs with the device: every `log_interval` steps.
        The row is taken here and written by `TrainLog` (at once, or with the next ones on a
        loop faster than its flush period: engine/train_log.py)."""
        self.settle_nan_check()
        # `epoch` in metrics.jsonl counts epochs completed, so a train row mid-epoch is fractional
        progress = round(self.epoch + self.batch_in_epoch / self.micro[self.epoch], 4)
        self._train_log.add(self._meters.snapshot(), logger=self.logger, step=self.step,
                            epoch=self.epoch, epochs=self.epochs, progress=progress,
                            lr=self.optimizer.param_groups[-1]["lr"],
                            # fp16: how many updates the loss scaler skipped so far
                            overflow_steps=self.overflow_steps if self.scaler.is_enabled() else None)

    def _write_rows_taken(self) -> None:
        """On the way out of fit(), however it ends: the rows taken are written (each was
        settled when taken). A failure here must not hide the one that ended the run."""
        try:
            self._train_log.flush(self.logger)
        except Exception as e:  # noqa: BLE001
            log.warning("the last train rows could not be written: %s", e)

    def update_best(self, metrics: dict[str, float]) -> bool:
        if self.best_metric not in metrics:
            raise ConfigError(f"train.best_metric: {self.best_metric!r} is not among the eval "
                              f"metrics {sorted(metrics)}")
        value = metrics[self.best_metric]
        better = self.best is None or (value > self.best if self.best_mode == "max" else value < self.best)
        if better:
            self.best = value
        return better

    @property
    def stopped_early(self) -> bool:
        return self.early_stop is not None and self.early_stop.stopped

    def preempt(self) -> None:
        """Save one checkpoint at this step (every rank is here, at the same step) and leave:
        exit 130 when any rank got Ctrl-C, else 75 (see guard.py)."""
        self.save_checkpoint()
        self.wait_for_save()  # exit 75/130 promises the checkpoint is on disk
        raise Preempted(self.step, self.guard.signals.received or "signal on another rank",
                        interrupted=self.guard.interrupted)

    # ------------------------------------------------------------------ state
    @property
    def samples_in_epoch(self) -> int:
        """Samples consumed in the current epoch over all ranks: what the sampler resumes from."""
        return self.train_sampler.samples_before(self.epoch, self.batch_in_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The full state; a collective (FSDP gathers shards, RNG states are gathered), so
        every rank calls it. Model and optimizer are full, name-keyed state dicts."""
        model_state, optimizer_state = parallel.full_state(self.model, self.optimizer)
        rngs = dist.all_gather_object(rng_state())
        meters = dist.all_gather_object(self._meters.state_dict())  # each rank's loss window
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "trainer": {"step": self.step, "epoch": self.epoch,
                        "batch_in_epoch": self.batch_in_epoch, "best": self.best,
                        "samples_in_epoch": self.samples_in_epoch,
                        "global_batch": self.global_batch, "world_size": self.world_size,
                        "batches": self.train_sampler.describe(),
                        "batch_plan": self.train_sampler.plan, "accum_steps": self.accum_steps,
                        "steps_per_epoch": self.steps_per_epoch,
                        "overflow_steps": self.overflow_steps,
                        "early_stop": self.early_stop and self.early_stop.state_dict()},
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "meters": meters[0],
            "meters_per_rank": meters,
            "hooks": [h.state_dict() for h in self.hooks],
            **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = state["trainer"]
        check_resumable(t, global_batch=self.global_batch, plan=self.train_sampler.plan,
                        steps_per_epoch=self.steps_per_epoch,
                        batches=self.train_sampler.describe(), accum_steps=self.accum_steps)
        parallel.load_full_state(self.model, self.optimizer, model_state=state["model"],
                                 optimizer_state=state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.nan_check is not None and not takes_found_inf(self.optimizer):
            self.nan_check = None  # the checkpoint's groups were not fused: check per step
        self.step, self.epoch = t["step"], t["epoch"]
        # the sample counter is global, so it carries over to another world size
        self.batch_in_epoch = self.train_sampler.batches_before(self.epoch, t["samples_in_epoch"])
        self.best = t["best"]
        if self.early_stop is not None and t.get("early_stop"):  # else: counting starts now
            self.early_stop.load_state_dict(t["early_stop"])
        for hook, hook_state in zip(self.hooks, state["hooks"], strict=True):
            hook.load_state_dict(hook_state)
        # each rank its own global random stream; what a world-size change does: streams.py
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        same_world = len(per_rank) == self.world_size
        how = streams.restore_rank_stream(per_rank, rank=dist.get_rank(),
                                          world_size=self.world_size, step=self.step)
        if how != "own" and dist.is_main():
            log.info("resume: world size %d -> %d: ranks keep their saved random streams where "
                     "there is one, the others get new ones (docs/resume.md)", len(per_rank),
                     self.world_size)
        self.overflow_steps = t.get("overflow_steps", 0)
        meters = state["meters_per_rank"]
        self._meters.load_state_dict(meters[dist.get_rank()] if same_world else state["meters"])

    def save_checkpoint(self, *, is_best: bool = False) -> None:
        self.settle_nan_check()  # never save weights past a step the guard must stop at
        self._train_log.flush(self.logger)  # the commit fsyncs metrics.jsonl: rows up to here
        state = self.state_dict()  # on every rank: gathering it is a collective
        self._writer.save(state, step=self.step, is_best=is_best)

    def wait_for_save(self) -> None:
        """Block until the background checkpoint write (if any) committed; a write error
        (a full disk) stops every rank with its one line, as a synchronous save does."""
        self._writer.wait()

    def resume_from_checkpoint(self) -> None:
        """Decide and load the resume (once: build_trainer calls it before anything is
        written, fit() again); the rules are engine/resume.py's."""
        if getattr(self, "_resume_decided", False):
            return
        self._resume_decided = True
        model, recipe = parallel.unwrap(self.model), self.extra_state.get("recipe", {})
        found = pick_resume(resume=self.resume, ckpt_dir=self.ckpt_dir, run_dir=self.run_dir,
                            check=lambda state: check_state(state, model=model, recipe=recipe,
                                                            force=self.resume == "force"))
        if found is not None:
            path, state = found
            self.load_state_dict(state)
            log.info("resumed from %s at epoch %d step %d", path, self.epoch, self.step)
