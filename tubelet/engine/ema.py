"""An exponential moving average of the model's weights, as an optional hook.

    hooks:
      - {type: ema, decay: 0.9999}

After every optimizer step `ema = decay * ema + (1 - decay) * weights` (buffers such as BatchNorm
statistics are copied). After each evaluation the EMA weights are evaluated too and logged as
`val/ema_<metric>`. The averages are saved in the checkpoint (`Hook.state_dict`) and restored
on resume, so a resumed run's EMA matches an uninterrupted one.

Under FSDP2 each rank averages its own shard of every weight (the shadow holds DTensors laid
out like the model's). The checkpoint holds full, plain tensors (gathered from all ranks, as
the model's are), so it loads with `weights_only=True` and no DTensor import, and at any world
size: each rank cuts its own shard back out on resume.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tubelet.engine import parallel
from tubelet.engine.hooks import Hook
from tubelet.registry import HOOKS

if TYPE_CHECKING:
    from tubelet.engine.trainer import Trainer


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


@HOOKS.register("ema")
class EMAHook(Hook):
    """`decay`: per-step decay. `warmup`: use `min(decay, (1 + n) / (10 + n))` after n updates,
    so the average does not stay anchored to the random init in short runs. `evaluate`: also
    evaluate the EMA weights after each evaluation."""

    def __init__(self, *, decay: float = 0.9999, warmup: bool = False, evaluate: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: must be in (0, 1), got {decay}")
        self.decay, self.warmup, self.evaluate = decay, warmup, evaluate
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] | None = None

    def before_train(self, trainer: "Trainer") -> None:
        model_state = _unwrap(trainer.model).state_dict()
        if self.shadow is None:  # a fresh run; on resume load_state_dict already filled it
            self.shadow = {k: v.detach().clone() for k, v in model_state.items()}
        else:  # full tensors from a checkpoint: this rank's shard of each (FSDP2), on its device
            self.shadow = {k: parallel.shard_like(v, model_state[k]) for k, v in self.shadow.items()}

    @torch.no_grad()
    def after_step(self, trainer: "Trainer") -> None:
        assert self.shadow is not None
        n = self.num_updates
        decay = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for key, value in _unwrap(trainer.model).state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.detach(), 1.0 - decay)
            else:
                self.shadow[key].copy_(value)
        self.num_updates += 1

    def after_eval(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        if not self.evaluate or self.shadow is None:
            return
        from tubelet.engine.evaluate import run_eval
        model = _unwrap(trainer.model)
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)  # shard into shard under FSDP2
        try:
            # as Trainer.evaluate: no collective inside the forwards (ranks hold different
            # numbers of eval batches), a stop signal polled between batches
            with parallel.eval_view(trainer.model) as view:
                ema_metrics = run_eval(view, trainer.task, trainer.val_loader,
                                       device=trainer.device, amp_dtype=trainer.amp_dtype,
                                       should_stop=trainer.guard.poll_stop)
        finally:
            model.load_state_dict(backup)
        metrics.update({k.replace("val/", "val/ema_", 1): v for k, v in ema_metrics.items()})

    def state_dict(self) -> dict[str, Any]:
        """Full tensors on the CPU; a collective under FSDP2 (every rank calls it, as the
        Trainer's state_dict does)."""
        shadow = None
        if self.shadow is not None:
            shadow = {k: parallel.full_tensor(v).cpu() for k, v in self.shadow.items()}
        return {"num_updates": self.num_updates, "shadow": shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates, self.shadow = state["num_updates"], state["shadow"]
