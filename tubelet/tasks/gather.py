"""All-gathers for contrastive losses: every rank's embeddings become negatives everywhere.

`gather_with_grad` keeps the gradient: the backward all-reduces (sums) the gradient of the
whole gathered tensor and hands each rank the rows it contributed. Each rank's loss then
sends gradient into every rank's embeddings, and with DDP's averaging the update equals that
of one process holding the whole global batch (tests/distributed: 2 ranks vs 1). A gather
whose backward returns only the local rows' gradient (the common `GatherLayer` without the
reduce) drops the other ranks' terms and does not have this property. An all-reduce rather
than torch's reduce-scatter because gloo (CPU) has no reduce-scatter.
"""
from __future__ import annotations

import torch
import torch.distributed as torch_dist

from tubelet import distributed as dist


def _gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = x.shape[0]
        return _gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        torch_dist.all_reduce(grad)  # every rank's loss' gradient w.r.t. every row
        rank = dist.get_rank()
        return grad[rank * ctx.rows:(rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(N, D) on each of W ranks (same N) -> (W*N, D), rank order; differentiable."""
    if dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """(N, D) on each of W ranks -> (W*N, D), rank order; no gradient (momentum keys)."""
    if dist.get_world_size() == 1:
        return x
    return _gather(x)
