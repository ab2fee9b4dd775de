"""Optimizers: parameter groups (no weight decay on norms, biases and position embeddings;
optional layer-wise lr decay) and the registered optimizer classes."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from tubelet.registry import OPTIMIZERS, ConfigError, did_you_mean


def fused_by_default(params: list[Any], *, fused: bool | None, foreach: bool | None,
                     key: str) -> bool | None:
    """`fused: null` (the default) means fused where the device has the kernels (CPU and CUDA
    both have them for AdamW and SGD since torch 2.4): torch would otherwise run CPU steps
    through its per-tensor Python loop, 3-5x slower. `fused: false` (or any `foreach`) keeps
    torch's own choice. A fused step also takes the NaN guard's on-device skip flag
    (`found_inf`), so the guard needs no device sync per step. Not auto-fused: FSDP2's DTensor
    parameters (`fused: true` asks for it anyway, at torch's risk)."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if fused is None and foreach is None:
        supported = _fused_devices()
        # FSDP2's sharded DTensor parameters keep torch's default: fused SGD and the
        # on-device found_inf flag do not run on DTensors in torch 2.13
        return bool(tensors) and all(t.device.type in supported and t.is_floating_point()
                                     and not hasattr(t, "to_local") for t in tensors) or None
    if fused:
        bad = [t for t in tensors if t.device.type not in _fused_devices()
               or not t.is_floating_point()]
        if bad:
            raise ConfigError(f"{key}.fused: true, but torch has no fused kernel for "
                              f"{bad[0].dtype} parameters on {bad[0].device.type}; "
                              "use fused: null (auto) or false")
    return fused


def _fused_devices() -> list[str]:
    from torch.optim.optimizer import _get_fused_kernels_supported_devices
    return _get_fused_kernels_supported_devices()


@OPTIMIZERS.register("adamw")
class AdamW(torch.optim.AdamW):
    """torch's AdamW, fused by default where the device supports it (`fused_by_default`)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None) -> None:
        params = list(params)
        fused = fused_by_default(params, fused=fused, foreach=foreach, key="optimizer")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=foreach, fused=fused)


@OPTIMIZERS.register("sgd")
class SGD(torch.optim.SGD):
    """torch's SGD, fused by default where the device supports it (`fused_by_default`)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None) -> None:
        params = list(params)
        fused = fused_by_default(params, fused=fused, foreach=foreach, key="optimizer")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=foreach, fused=fused)


def takes_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer.step()` honours `optimizer.found_inf` (a 0-dim float tensor, 1.0 =
    skip this update, decided on the device): torch's fused kernels and our LARS do."""
    # the groups, not the defaults: load_state_dict restores each group's saved `fused`
    return (all(g.get("fused") for g in optimizer.param_groups)
            or getattr(optimizer, "supports_found_inf", False))


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

    supports_found_inf = True  # step() honours `self.found_inf` (see takes_found_inf)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One vectorised step per group (torch._foreach_*: a few kernels for all tensors,
        not a Python loop of small ops). Bit-identical on CPU to the per-tensor loop of
        mae/util/lars.py: the same elementwise ops in the same order per tensor."""
        loss = closure() if closure is not None else None
        skip = getattr(self, "found_inf", None)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._group_step(group, params, skip)
        return loss

    def _group_step(self, group: dict[str, Any], params: list[torch.Tensor],
                    skip: torch.Tensor | None) -> None:
        updates = [p.grad for p in params]
        mats = [i for i, p in enumerate(params) if p.ndim > 1]
        if mats:
            scaled = torch._foreach_add([updates[i] for i in mats], [params[i] for i in mats],
                                        alpha=group["weight_decay"])
            param_norm = torch.stack(torch._foreach_norm([params[i] for i in mats]))
            update_norm = torch.stack(torch._foreach_norm(scaled))
            ratio = torch.where((param_norm > 0) & (update_norm > 0),
                                group["trust_coefficient"] * param_norm / update_norm,
                                torch.ones_like(param_norm))
            torch._foreach_mul_(scaled, list(ratio.unbind()))
            for i, u in zip(mats, scaled):
                updates[i] = u
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        if skip is None:
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, updates)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
            return
        # a step the guard refused on the device: keep buffers and weights as they were
        # (a where, not a multiply by 0: NaN * 0 is NaN)
        new_bufs = torch._foreach_add(torch._foreach_mul(bufs, group["momentum"]), updates)
        new_params = torch._foreach_add(params, new_bufs, alpha=-group["lr"])
        keep = skip == 0
        for old, new in zip(bufs + params, new_bufs + new_params):
            old.copy_(torch.where(keep, new, old))

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
