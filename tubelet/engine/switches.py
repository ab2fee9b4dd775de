"""Switches that change how a model runs, not what it computes: activation checkpointing
(`model.grad_checkpointing`), `torch.compile` (`train.compile`) and the channels-last-3d memory
format (`train.channels_last`). Each leaves the parameter names, and so checkpoints, resume and
export, as they are; the recipe checks are in `tubelet.validate_switches`."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_KEYS = ("mode", "fullgraph", "dynamic")  # what a `train.compile` mapping may set


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> None:
    """timm's surface: `model.set_grad_checkpointing(enable)`; every tubelet model with blocks
    or stages has it (ViT, video ViT, MAE encoder and decoder, ResNet3D, VideoClassifier)."""
    method = getattr(model, "set_grad_checkpointing", None)
    if method is None:
        raise ConfigError(f"model.grad_checkpointing: {type(model).__name__} has no "
                          "set_grad_checkpointing(); remove the key")
    method(enable)


def compile_model(model: nn.Module, *, mode: str | None = None, fullgraph: bool | None = None,
                  dynamic: bool | None = None) -> None:
    """Compile `model`'s forward in place (`nn.Module.compile`): unlike `torch.compile(model)`
    it adds no `_orig_mod.` wrapper, so state dicts, checkpoints and exports keep their names.
    Compilation itself happens at the first forward (and again for eval mode and for a new
    batch shape); the first logged step time includes it. An option left None is torch's
    default."""
    options = {k: v for k, v in (("mode", mode), ("fullgraph", fullgraph), ("dynamic", dynamic))
               if v is not None}
    model.compile(**options)
    log.info("train.compile: forward compiled with torch.compile(%s)",
             ", ".join(f"{k}={v!r}" for k, v in options.items()) or "default")


def channels_last_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: 5-D tensor inputs in channels-last-3d memory format (N, T, H, W, C in
    memory), the layout the weights were converted to."""
    return tuple(a.contiguous(memory_format=torch.channels_last_3d)
                 if torch.is_tensor(a) and a.ndim == 5 else a for a in args)


def use_channels_last(model: nn.Module) -> nn.Module:
    """Convert the 5-D weights (Conv3d) to `torch.channels_last_3d` and make the model's inputs
    follow. The values are the same; convolution kernels differ, so the float results may
    differ in the last bits from the default layout."""
    model.to(memory_format=torch.channels_last_3d)
    model.register_forward_pre_hook(channels_last_hook)
    return model
