"""Contrastive losses over ranks: negatives gathered from every rank make W ranks x N clips the
same objective as one process with W*N clips: the loss and (with the gradient-carrying gather)
the gradient. Real torchrun + gloo. Equal up to float rounding (the sums run in another order),
not bitwise. End to end (SimCLR, and MoCo with a queue: weights, momentum encoder and queue
after training on 2 ranks vs 1 process) in benchmarks/contrastive_ranks.py, a report script."""
from __future__ import annotations

import sys

import pytest
import torch

from .conftest import HERE, run


@pytest.mark.slow
def test_gathered_negatives_give_one_process_loss_and_gradient(tmp_path):
    sys.path.insert(0, str(HERE))
    from contrastive_grads import batch, losses
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(HERE / "contrastive_grads.py"), str(tmp_path / "ranks.pt")], cwd=tmp_path)
    ranks = torch.load(tmp_path / "ranks.pt", weights_only=True)
    x1, x2, w, w_m = batch()
    for name in ("simclr", "moco"):
        w_1 = w.clone().requires_grad_(True)
        loss = losses(x1, x2, w_1, w_m, rank=0)[name]
        loss.backward()
        assert torch.allclose(ranks[name]["loss"], loss.detach(), rtol=1e-6, atol=0), name
        assert torch.allclose(ranks[name]["grad"], w_1.grad, rtol=1e-5, atol=1e-7), name
