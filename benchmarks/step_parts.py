"""Where tubelet's per-step floor goes, timed inside the loop: one `Trainer.fit` on the
issue's MLP (benchmarks/step_floor.py's setup: metrics.jsonl, TensorBoard, the progress display,
the NaN guard `stop`, `log_interval` 10) whose steps alternate between tubelet's own
`train_step` and a variant, so both run in the same process, heap, caches and moment. A hook
stamps the end of every step; each side's figure is the median duration of its steps.

    python benchmarks/step_parts.py [--steps 6000] [--threads 1]

Three figures, each a median difference of step durations (us):
- `train_step` over a raw step (forward, cross-entropy, backward, fused AdamW step, zero_grad,
  the same lr): everything tubelet's step adds, the NaN check included;
- the NaN check over a raw step: the raw step plus the guard's check kernel over every gradient
  and the read of its flag, which is what `nan_guard: stop` costs on one CPU process;
- a log line (metrics.jsonl row, TensorBoard, display): the step after it over the others,
  divided by `log_interval` for its share of every step.
Timed alone, the check's kernel over 0.1 M gradients takes ~25 us here; between the model's
kernels every distinct piece of code runs with cold caches and costs more, which is why these
are measured in the loop and not in a micro-benchmark.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_floor  # noqa: E402  (the MLP, its data and loader)

from tubelet.engine.hooks import Hook  # noqa: E402
from tubelet.engine.trainer import Trainer  # noqa: E402
from tubelet.loggers import RunLogger, setup_text_log  # noqa: E402
from tubelet.tasks.classification import ClassificationTask  # noqa: E402

LOG_INTERVAL, WARMUP_STEPS = 10, 200


def raw_step(trainer: Trainer, batch: dict, *, check: bool) -> bool:
    """A hand-written step on the Trainer's model and optimizer, with the guard's check
    kernel and flag read when `check` (as `DeviceNanCheck.check_now` runs them)."""
    trainer.batch_in_epoch += 1
    lr = trainer.lr_at(trainer.step)
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(trainer.model(batch["video"]), batch["label"])
    loss.backward()
    apply = True
    if check:
        nan_check = trainer.nan_check
        params = trainer._params or trainer._trainable()  # listed once, as the Trainer does
        grads = [g for p in params if (g := p.grad) is not None]
        torch._amp_foreach_non_finite_check_and_unscale_([*grads, loss], nan_check._found,
                                                         nan_check._one)
        apply = not nan_check._found.item()
    if apply:
        trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.step += 1
    return True


class Alternating(Trainer):
    """Even steps (0-based) run side `a`, odd ones side `b`: "tubelet" (its own train_step),
    "raw" or "raw+check"."""

    a = b = "tubelet"

    def train_step(self, batch: dict) -> bool:
        side = self.b if self.step % 2 else self.a
        if side == "tubelet":
            return super().train_step(batch)
        return raw_step(self, batch, check=side == "raw+check")


class Stamps(Hook):
    def __init__(self) -> None:
        self.t: list[float] = []

    def after_step(self, trainer) -> None:
        self.t.append(time.perf_counter())
        if trainer.step == WARMUP_STEPS:
            gc.freeze()  # what exists now is never garbage: no long collections later


def durations(a: str, b: str, steps: int) -> dict[int, float]:
    """{step: its duration in us} (1-based steps, after the warm-up)."""
    make_model, make_optimizer, dataset, batch, clip, _ = step_floor.setup("mlp", steps)
    model = make_model()
    loader, sampler = step_floor.make_loader(dataset, batch)
    stamps = Stamps()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Alternating(
            model=model, task=ClassificationTask(step_floor.bench.NUM_CLASSES),
            train_loader=loader, optimizer=make_optimizer(model), train_sampler=sampler,
            val_loader=None, run_dir=Path(tmp), base_lr=step_floor.bench.LR,
            device=torch.device("cpu"), epochs=1, hooks=[stamps],
            logger=RunLogger(Path(tmp), tensorboard=True, progress=True),
            warmup_epochs=step_floor.WARMUP_EPOCHS, clip_grad=clip, log_interval=LOG_INTERVAL,
            nan_guard="stop")
        trainer.a, trainer.b = a, b
        trainer.fit()
    t = stamps.t  # t[i]: the end of step i + 1
    return {i + 2: (t[i + 1] - t[i]) * 1e6 for i in range(WARMUP_STEPS, len(t) - 1)}


def paired(a: str, b: str, steps: int) -> tuple[float, float]:
    """Median step durations of sides `a` (the odd 1-based steps) and `b`, leaving out the
    steps after a log line."""
    d = durations(a, b, steps)
    mine = [v for s, v in d.items() if s % 2 == 1 and s % LOG_INTERVAL != 1]
    theirs = [v for s, v in d.items() if s % 2 == 0]
    return statistics.median(mine), statistics.median(theirs)


def log_line(steps: int) -> tuple[float, float]:
    """(median step after a log line, median of the other steps), every step tubelet's."""
    d = durations("tubelet", "tubelet", steps)
    after = [v for s, v in d.items() if s % LOG_INTERVAL == 1]
    rest = [v for s, v in d.items() if s % LOG_INTERVAL != 1]
    return statistics.median(after), statistics.median(rest)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_text_log(None, enabled=False)
    mine, raw = paired("tubelet", "raw", args.steps)
    print(f"train_step {mine:.1f} us, raw step {raw:.1f} us: tubelet's step adds "
          f"{mine - raw:+.1f} us")
    checked, raw2 = paired("raw+check", "raw", args.steps)
    print(f"raw step + NaN check {checked:.1f} us, raw step {raw2:.1f} us: the check costs "
          f"{checked - raw2:+.1f} us")
    after, rest = log_line(args.steps)
    print(f"step after a log line {after:.1f} us, others {rest:.1f} us: a log line costs "
          f"{after - rest:+.1f} us, {(after - rest) / LOG_INTERVAL:+.1f} us per step")
    print(f"{args.threads} thread(s), {args.steps} steps per run; in us per step: train_step "
          f"{mine - raw:+.1f} (the NaN check alone {checked - raw2:+.1f}), log lines "
          f"{(after - rest) / LOG_INTERVAL:+.1f}")


if __name__ == "__main__":
    main()
