"""DDP / FSDP2 wrapping of a built model, applied from outside the model, and full
(unsharded) state dicts, so a checkpoint looks the same whatever the strategy or world size.

Checkpoints hold full state dicts written by rank 0 (`torch.distributed.checkpoint.state_dict`
gathers FSDP shards; for DDP and one process it is the plain state dict keyed by parameter
name). Every rank reads the same file back and keeps its own shard, so a run saved by 2 ranks
resumes on 1, and a DDP checkpoint resumes under FSDP.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tubelet import distributed as dist
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
STRATEGIES = ("ddp", "fsdp", "none")
PARAM_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def wrap_model(model: nn.Module, *, strategy: str = "ddp", device: torch.device,
               sync_batchnorm: bool = False, static_graph: bool = False,
               find_unused_parameters: bool = False, param_dtype: str = "none") -> nn.Module:
    """The model as the Trainer should call it. With one process, or `strategy: none`,
    it is returned as is, so a single-process run has no wrapper in its hot path."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"distributed.strategy: unknown {strategy!r}; choose one of {list(STRATEGIES)}")
    if param_dtype not in PARAM_DTYPES:
        raise ConfigError(f"distributed.param_dtype: unknown {param_dtype!r}; "
                          f"choose one of {list(PARAM_DTYPES)}")
    if dist.get_world_size() == 1 or strategy == "none":
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, static_graph=static_graph,
                                       find_unused_parameters=find_unused_parameters)
    return _fully_shard(model, param_dtype=PARAM_DTYPES[param_dtype])


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP2 shards one by one, in forward order. The rule, which a plugin model
    can follow too: a module with a `fsdp_units()` method names its own units (our ViT: its
    blocks; MAE/VideoMAE: encoder and decoder blocks; a classifier: its backbone's; ResNet3D:
    its stages); a module without one is searched child by child, so a plugin model that
    holds one of ours (e.g. `self.trunk = VisionTransformer(...)`) needs no method."""
    method = getattr(model, "fsdp_units", None)
    if callable(method):
        return list(method())
    return [unit for child in model.children() for unit in fsdp_units(child)]


def describe_units(model: nn.Module, units: list[nn.Module]) -> str:
    """'encoder.blocks.0-11, decoder.blocks.0-3': unit names, runs of numbers folded."""
    names = {m: n for n, m in model.named_modules()}
    groups: dict[str, list[str]] = {}
    for unit in units:
        prefix, _, last = names[unit].rpartition(".")
        groups.setdefault(prefix if last.isdigit() else names[unit], []).append(last)
    parts = []
    for prefix, items in groups.items():
        nums = [int(x) for x in items if x.isdigit()]
        if len(nums) == len(items) and nums:
            parts.append(f"{prefix}.{min(nums)}-{max(nums)}" if len(nums) > 1 else f"{prefix}.{nums[0]}")
        else:
            parts.append(prefix)
    return ", ".join(parts)


def _fully_shard(model: nn.Module, *, param_dtype: torch.dtype | None) -> nn.Module:
    """FSDP2: shard each unit (transformer block, ResNet stage) first, then the root (which
    then holds only what is left: embeddings, norms, head), so a unit's parameters are
    gathered only while it runs and each all-gather overlaps the previous unit's compute."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    # reduce in fp32 even when computing in bf16: gradient sums over many ranks lose bits
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    units = fsdp_units(model)
    if units:
        log.info("fsdp: %d units (%s) and the root", len(units), describe_units(model, units))
    else:
        log.warning("fsdp: %s names no units (no `fsdp_units()` method in it); sharding the "
                    "whole model as one unit: every step gathers all of it at once",
                    type(model).__name__)
    for unit in units:
        fully_shard(unit, mp_policy=mp)
    # the root's parameters are needed again at once by backward: keep them after forward
    return fully_shard(model, mp_policy=mp, reshard_after_forward=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The module without a DDP wrapper (FSDP2 shards in place and has none)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_sharded(model: nn.Module) -> bool:
    """Whether a forward pass runs collectives (FSDP2 all-gathers parameters), so every rank
    must call it the same number of times, in eval too."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def full_tensor(t: torch.Tensor | None) -> torch.Tensor | None:
    """A plain tensor from a DTensor (FSDP's gradient norm is one), else `t` unchanged.
    A collective for a DTensor: every rank calls it, in the same order."""
    from torch.distributed.tensor import DTensor
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` (a whole tensor, the same on every rank) laid out as `like`: this rank's shard
    when `like` is an FSDP2 DTensor (cut locally, no communication), else on its device."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh,
                                 like.placements, src_data_rank=None)
    return full.to(like.device)


@contextlib.contextmanager
def eval_view(model: nn.Module) -> Iterator[nn.Module]:
    """The model to evaluate with, such that its forward runs no collective: ranks hold
    different numbers of eval batches (no padding duplicates), so a collective inside the
    loop would hang. DDP: the plain module. FSDP2: all parameters gathered once up front
    (one collective on every rank) and kept gathered until the end of eval."""
    if not is_sharded(model):
        yield unwrap(model)
        return
    units = [m for m in model.modules() if is_sharded(m)]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)


# torch.distributed.checkpoint is imported where it is used: ~1 s of import otherwise paid by
# every `tubelet` command (config, data check, predict), and by each test process


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts, unsharded, on the CPU, keyed by parameter name.
    A collective for FSDP: every rank must call it. Ranks other than 0 may get empty dicts."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    module, full = unwrap(model), StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(module, options=full),
            get_optimizer_state_dict(module, optimizer, options=full))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, *,
                    model_state: dict[str, Any], optimizer_state: dict[str, Any] | None) -> None:
    """Load full state dicts (from `full_state`) into a model of any strategy; each rank
    keeps its own shard. Every rank passes the full dicts (all read the same file)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    module = unwrap(model)
    options = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(module, model_state, options=options)
    if optimizer is None or optimizer_state is None:
        return
    if all(isinstance(k, int) for k in optimizer_state["state"]):  # older id-keyed checkpoint
        optimizer.load_state_dict(optimizer_state)
        return
    set_optimizer_state_dict(module, optimizer, optimizer_state, options=options)
