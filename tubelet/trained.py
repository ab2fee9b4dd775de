"""A trained model and its card (tubelet/model_card.py) from what `tubelet predict` and
`tubelet export` are given: a checkpoint file, a run directory (its checkpoints/last.pt) or a
`.safetensors` export. Loading is `weights_only` (engine/checkpoint.py), never unpickling code."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tubelet.model_card import card_of_checkpoint, from_metadata
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")


@dataclass
class Trained:
    model: nn.Module  # in eval mode, on the CPU
    card: dict[str, Any]
    path: Path  # the file the weights came from
    no_names: str | None = None  # why class names are missing (None: the card has them)

    @property
    def classes(self) -> list[str] | None:
        return self.card.get("classes") or None


def read_weights_and_card(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None,
                                                str | None]:
    """(weights, card or None, why the class names are missing or None) of a checkpoint file
    or a .safetensors export."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from tubelet.models.weights import read_state_dict
        weights = read_state_dict(path, key="checkpoint")
        with safe_open(str(path), framework="pt") as f:
            card = from_metadata(f.metadata(), where=str(path))
        return weights, card, None if card is None or card.get("classes") else \
            "the export holds no class names"
    from tubelet.engine.checkpoint import load_checkpoint
    state = load_checkpoint(path, key="checkpoint")
    if not isinstance(state.get("model"), dict):
        raise ConfigError(f"checkpoint: {path}: holds no 'model' state dict (not a tubelet "
                          "checkpoint)")
    card, why = card_of_checkpoint(state)
    return state["model"], card, why


def load_trained(checkpoint: str | Path) -> Trained:
    """The model of `checkpoint` (file, run directory or .safetensors export) with its card.
    A file without a card or recipe (a foreign checkpoint, an export written before cards)
    cannot say how to build the model or preprocess a clip: ConfigError."""
    from tubelet import build
    from tubelet.engine.checkpoint import model_mismatch
    from tubelet.models.weights import resolve_checkpoint
    path = resolve_checkpoint(checkpoint, key="checkpoint")
    weights, card, why = read_weights_and_card(path)
    if card is None:
        raise ConfigError(f"checkpoint: {path}: holds no model card or recipe, so it cannot "
                          "say how to build the model and preprocess a clip (a foreign "
                          "checkpoint, or an export written before cards: export it again "
                          "from its run directory)")
    build._register_builtins(card.get("imports"))
    with torch.random.fork_rng(devices=[]):  # building draws init weights: keep the RNG as it was
        model = build.build_at(card["model"], build.MODELS, key="model")
    reason = model_mismatch(weights, {k: v.shape for k, v in model.state_dict().items()})
    if reason is not None:
        raise ConfigError(f"checkpoint: {path}: {reason}")
    model.load_state_dict(weights)
    return Trained(model=model.eval(), card=card, path=path, no_names=why)
