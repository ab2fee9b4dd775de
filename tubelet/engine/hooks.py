"""A small Hook base for optional extras (EMA, profiler, ...). Checkpointing, evaluation and
logging are not hooks: they are written inline in `Trainer.fit`, where a reader looks for them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tubelet.engine.trainer import Trainer


class Hook:
    """Override the events you need. A hook with state returns it from `state_dict`; the
    Trainer stores it in the checkpoint and gives it back on resume."""

    def before_train(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer") -> None: ...

    def after_eval(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...

    def after_train(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
