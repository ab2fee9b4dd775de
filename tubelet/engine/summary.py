"""The model summary a run records at its start: parameters (total, trainable, frozen) and the
compute of one clip's forward, as `summary.json` in the run dir, a log line, and a column of
`tubelet report`.

FLOPs come from torch's own counter (`torch.utils.flop_counter.FlopCounterMode`), which counts
a multiply-add as 2 FLOPs. Video papers count a multiply-add as one "FLOP" (VideoMAE's
180 GFLOPs per view for ViT-B 16x224 is 180 G multiply-adds; torch counts ~361 G for the same
forward), so both are recorded: `gflops` (torch's convention) and `gmacs` (the papers').
Attention is included: on the meta device `scaled_dot_product_attention` decomposes into the
two batched matmuls that the counter sees, and the fused CUDA kernels have their own formulas.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("tubelet")
FILENAME = "summary.json"


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, trainable and frozen parameter counts (each tensor once, even if shared)."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()  # a DTensor (FSDP2) counts its full, unsharded size
        trainable += p.numel() if p.requires_grad else 0
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def count_flops(model: nn.Module, input_shape: tuple[int, ...], *,
                device: torch.device | str = "meta") -> int:
    """FLOPs (2 per multiply-add) of one forward of a zero batch of `input_shape` in eval mode,
    with no gradient and the random streams left as they were (masks, dropout)."""
    was_training = model.training
    devices = [device] if torch.device(device).type == "cuda" else []
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad(), counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def model_summary(model: nn.Module, *, input_shape: tuple[int, ...] | None, views: int = 1,
                  meta_model: Callable[[], nn.Module] | None = None,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """Parameters of `model` and the compute of one clip of `input_shape` (batch dim included,
    counted at batch 1). The count runs on `meta_model()` (a meta-device copy: no memory, no
    time) when given; a model whose forward cannot run on meta tensors (MAE's data-dependent
    masking) is counted on `model` itself, on `device`, with a batch of one."""
    summary: dict[str, Any] = {"parameters": count_parameters(model), "input_shape": None,
                               "gflops": None, "gmacs": None, "views": views,
                               "gflops_x_views": None, "flops_convention":
                               "gflops: torch's FlopCounterMode, 2 per multiply-add; gmacs: "
                               "multiply-adds, what video papers call FLOPs"}
    if input_shape is None:
        summary["flops_note"] = "the clip shape is known only from the data"
        return summary
    shape = (1, *input_shape[1:])
    summary["input_shape"] = list(shape)
    flops, error = None, None
    if meta_model is not None:
        try:
            flops = count_flops(meta_model(), shape, device="meta")
        except Exception as e:  # noqa: BLE001 - data-dependent ops (MAE's masking) need real tensors
            error = e
    if flops is None:
        try:
            flops = count_flops(model, shape, device=device)
        except Exception as e:  # noqa: BLE001 - a summary must never stop a run
            summary["flops_note"] = f"not counted: {type(e).__name__}: {e}"
            log.warning("model summary: FLOPs not counted (%s; on meta: %s)", e, error)
            return summary
    summary["gflops"] = flops / 1e9
    summary["gmacs"] = flops / 2e9
    summary["gflops_x_views"] = flops * views / 1e9
    return summary


def describe(summary: dict[str, Any]) -> str:
    """One log line."""
    p = summary["parameters"]
    text = (f"model: {p['total']:,} parameters ({p['trainable']:,} trainable, "
            f"{p['frozen']:,} frozen)")
    if summary.get("gflops") is None:
        return text + f"; FLOPs {summary.get('flops_note', 'not counted')}"
    shape = "x".join(map(str, summary["input_shape"]))
    return (text + f"; {summary['gflops']:.4g} GFLOPs per clip forward at {shape} "
            f"({summary['gmacs']:.4g} G multiply-adds, the papers' 'GFLOPs'), x "
            f"{summary['views']} test views = {summary['gflops_x_views']:.4g} GFLOPs")


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """`summary.json` in the run dir (rewritten on resume: the model is the same) and the log."""
    from tubelet.rundir import write_atomic
    write_atomic(Path(run_dir) / FILENAME, (json.dumps(summary, indent=2) + "\n").encode())
    log.info("%s", describe(summary))

