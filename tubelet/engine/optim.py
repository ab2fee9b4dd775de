"""Optimizers: parameter groups (no weight decay on norms, biases and position embeddings;
optional layer-wise lr decay) and the registered optimizer classes."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from tubelet.registry import OPTIMIZERS, ConfigError, did_you_mean

OPTIMIZERS.add("adamw", torch.optim.AdamW)
OPTIMIZERS.add("sgd", torch.optim.SGD)


@OPTIMIZERS.register("lars")
class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as MAE's linear probe
    uses it (mae/util/lars.py): for every tensor of 2+ dimensions, the update (gradient plus
    weight decay) is rescaled to `trust_coefficient * |w| / |update|` before momentum; biases
    and other 1-D tensors take plain momentum SGD and no weight decay."""

    def __init__(self, params: Iterable[Any], lr: float = 0.0, *, weight_decay: float = 0.0,
                 momentum: float = 0.9, trust_coefficient: float = 0.001) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                        trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    ratio = torch.where((param_norm > 0) & (update_norm > 0),
                                        group["trust_coefficient"] * param_norm / update_norm,
                                        torch.ones_like(param_norm))
                    update = update.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss

# Keys of an `optimizer:` node that tubelet consumes before the optimizer class sees the rest.
GROUP_KEYS = ("blr", "layer_decay", "custom_keys")
MULT_KEYS = ("lr_mult", "decay_mult")  # what one `custom_keys` entry may set


def match_custom_key(name: str, keys: Iterable[str]) -> str | None:
    """The `custom_keys` pattern that rules parameter `name`: of the patterns contained in the
    name, the longest (ties: the alphabetically first), as MMEngine's
    `DefaultOptimWrapperConstructor` sorts them; None when none is contained."""
    for key in sorted(sorted(keys), key=len, reverse=True):
        if key in name:
            return key
    return None


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float | None = None,
                 no_weight_decay: Iterable[str] = (),
                 custom_keys: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Split trainable parameters into decay / no-decay groups (1-D tensors, biases and the
    names in `no_weight_decay` skip decay, as in MAE's `param_groups_lrd`), and, with
    `layer_decay`, scale each group's lr by `layer_decay ** (num_layers - layer_id)`.
    `custom_keys` ({name pattern: {lr_mult, decay_mult}}, see `match_custom_key`) multiplies
    the lr scale and the weight decay of the parameters its pattern rules; a parameter that
    skips decay keeps 0. Each group's `lr_scale` is what the Trainer multiplies the lr by."""
    skip = set(no_weight_decay) | set(getattr(model, "no_weight_decay", lambda: set())())
    get_layer_id = getattr(model, "get_layer_id", None)
    num_layers = getattr(model, "num_layers", None)
    if layer_decay is not None and (get_layer_id is None or num_layers is None):
        raise ValueError(f"optimizer.layer_decay: model {type(model).__name__} has no layer ids")
    custom_keys = custom_keys or {}
    names = [name for name, _ in model.named_parameters()]
    for key in custom_keys:  # a pattern that rules nothing is a typo, not a no-op
        if not any(key in name for name in names):
            raise ConfigError(f"optimizer.custom_keys.{key}: matches no parameter name of the "
                              f"model (e.g. {names[0]!r}){did_you_mean(key, _prefixes(names))}")
    groups: dict[tuple[bool, int, str], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip
        layer_id = get_layer_id(name) if layer_decay is not None else 0
        key = match_custom_key(name, custom_keys)
        mult = custom_keys.get(key, {}) if key is not None else {}
        group = groups.setdefault((no_decay, layer_id, key or ""), {
            "params": [],
            "weight_decay": 0.0 if no_decay else weight_decay * mult.get("decay_mult", 1.0),
            "lr_scale": (1.0 if layer_decay is None else layer_decay ** (num_layers - 1 - layer_id))
            * mult.get("lr_mult", 1.0),
        })
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]


def _prefixes(names: list[str]) -> list[str]:
    """Every dotted prefix of the parameter names ("backbone", "backbone.stages", ...)."""
    out = dict.fromkeys(".".join(n.split(".")[:i]) for n in names
                        for i in range(1, n.count(".") + 2))
    return list(out)
