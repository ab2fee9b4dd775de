"""Optimizers: parameter groups (no weight decay on norms, biases and position embeddings;
optional layer-wise lr decay) and the registered optimizer classes."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from tubelet.registry import OPTIMIZERS

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
GROUP_KEYS = ("blr", "layer_decay")


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float | None = None,
                 no_weight_decay: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Split trainable parameters into decay / no-decay groups (1-D tensors, biases and the
    names in `no_weight_decay` skip decay, as in MAE's `param_groups_lrd`), and, with
    `layer_decay`, scale each group's lr by `layer_decay ** (num_layers - layer_id)`."""
    skip = set(no_weight_decay) | set(getattr(model, "no_weight_decay", lambda: set())())
    get_layer_id = getattr(model, "get_layer_id", None)
    num_layers = getattr(model, "num_layers", None)
    if layer_decay is not None and (get_layer_id is None or num_layers is None):
        raise ValueError(f"optimizer.layer_decay: model {type(model).__name__} has no layer ids")
    groups: dict[tuple[bool, int], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip
        layer_id = get_layer_id(name) if layer_decay is not None else 0
        group = groups.setdefault((no_decay, layer_id), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": 1.0 if layer_decay is None else layer_decay ** (num_layers - 1 - layer_id),
        })
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]
