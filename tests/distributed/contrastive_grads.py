"""Run under torchrun (gloo): each rank takes its share of a fixed batch of two views, computes
the SimCLR and MoCo losses with negatives gathered from all ranks, backpropagates into a tiny
linear encoder, averages the gradients as DDP does, and rank 0 saves loss and gradient to
argv[1]. The test compares them with one process holding the whole batch."""
from __future__ import annotations

import sys

import torch
import torch.distributed as torch_dist

from tubelet.tasks.contrastive import moco_infonce, nt_xent
from tubelet.tasks.gather import gather_no_grad


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    w, w_m = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    return x1, x2, w, w_m


def losses(x1, x2, w, w_m, *, rank: int) -> dict[str, torch.Tensor]:
    """The two losses for this rank's rows of the batch (all rows with one process)."""
    simclr = nt_xent(x1 @ w, x2 @ w, temperature=0.3)
    k1, k2 = gather_no_grad(x1 @ w_m), gather_no_grad(x2 @ w_m)
    moco = (moco_infonce(x1 @ w, k2, temperature=0.2, rank=rank)
            + moco_infonce(x2 @ w, k1, temperature=0.2, rank=rank))
    return {"simclr": simclr, "moco": moco}


def main() -> None:
    torch_dist.init_process_group("gloo")
    rank, world = torch_dist.get_rank(), torch_dist.get_world_size()
    x1, x2, w, w_m = batch()
    n = len(x1) // world
    rows = slice(rank * n, (rank + 1) * n)
    out = {}
    for name in ("simclr", "moco"):
        w_r = w.clone().requires_grad_(True)
        loss = losses(x1[rows], x2[rows], w_r, w_m, rank=rank)[name]
        loss.backward()
        grad = w_r.grad.clone()
        torch_dist.all_reduce(grad)  # DDP: the mean of the ranks' gradients
        mean_loss = loss.detach().clone()
        torch_dist.all_reduce(mean_loss)
        out[name] = {"loss": mean_loss / world, "grad": grad / world}
    if rank == 0:
        torch.save(out, sys.argv[1])
    torch_dist.destroy_process_group()


if __name__ == "__main__":
    main()
