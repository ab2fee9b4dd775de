"""Early stopping on `train.best_metric`, as a hook the Trainer holds itself.

    train:
      best_metric: val/acc1            # and best_mode: max (the defaults)
      early_stop: {patience: 5, min_delta: 0.001}

After each evaluation the metric either improves on the best value seen so far by more than
`min_delta` (that value becomes the best and the count of bad evaluations restarts), or the
count goes up; when `patience` evaluations in a row have not improved, training stops after
that epoch's checkpoint. `patience` counts evaluations, so with `eval_interval: 2` a patience of
3 waits 6 epochs. Lightning and Keras mean the same by patience and min_delta.

It is not an entry of `hooks:` so that it decides after every other hook has added its metrics
(EMA's `val/ema_*` can be the best_metric) and before the epoch's checkpoint is written: the
checkpoint holds the count, and a resume continues it exactly. Every rank holds rank 0's state
after each evaluation (one broadcast), so all ranks stop at the same epoch; the metrics are
already reduced across ranks, so rank 0's decision is the one every rank would take.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from tubelet import distributed as dist
from tubelet.engine.hooks import Hook
from tubelet.registry import ConfigError

if TYPE_CHECKING:
    from tubelet.engine.trainer import Trainer

log = logging.getLogger("tubelet")


class EarlyStopping(Hook):
    """`patience`: evaluations in a row without improvement before stopping (0: stop at the
    first one). `min_delta`: the least change of `metric` that counts as an improvement.
    `metric` and `mode` are the recipe's `train.best_metric` and `train.best_mode`."""

    def __init__(self, *, patience: int, min_delta: float = 0.0, metric: str = "val/acc1",
                 mode: str = "max") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ConfigError(f"train.early_stop.patience: must be an integer >= 0, got "
                              f"{patience!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)
                and min_delta >= 0):
            raise ConfigError(f"train.early_stop.min_delta: must be a number >= 0, got "
                              f"{min_delta!r}")
        if mode not in ("max", "min"):
            raise ConfigError(f"train.best_mode: expected 'max' or 'min', got {mode!r}")
        self.patience, self.min_delta, self.metric, self.mode = patience, min_delta, metric, mode
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_evals = 0

    @property
    def stopped(self) -> bool:
        return stops(self.state_dict(), patience=self.patience)

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float, *, epoch: int) -> bool:
        """Count one evaluation; True when training should stop now."""
        if self.improves(value):
            self.best, self.best_epoch, self.bad_evals = value, epoch, 0
        else:
            self.bad_evals += 1
        return self.stopped

    def after_eval(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        """Called by the Trainer after `update_best`, before the epoch's checkpoint."""
        if self.metric not in metrics:  # update_best has raised already; an invariant here
            raise AssertionError(f"{self.metric} not in {sorted(metrics)}")
        if dist.is_main():
            self.update(float(metrics[self.metric]), epoch=trainer.epoch)
        self.load_state_dict(dist.broadcast_object(self.state_dict()))  # rank 0's, everywhere
        if self.stopped and dist.is_main():
            log.info("early stop: %s has not improved by more than %g for %d evaluation(s) "
                     "(best %.6g at epoch %d); stopping after epoch %d of %d", self.metric,
                     self.min_delta, self.bad_evals, self.best, self.best_epoch, trainer.epoch,
                     trainer.epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_evals": self.bad_evals,
                "patience": self.patience}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # the patience is the recipe's: a resume with a longer patience continues the run
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_evals = state["bad_evals"]


def stops(state: dict[str, Any] | None, *, patience: int) -> bool:
    """Whether the early-stopping state saved in a checkpoint (`trainer.early_stop`) means
    the run is over at `patience` (the recipe's, which a resume may have changed)."""
    return bool(state) and state["bad_evals"] > 0 and state["bad_evals"] >= patience
