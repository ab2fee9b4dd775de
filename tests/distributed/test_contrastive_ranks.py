"""Contrastive losses over ranks: negatives gathered from every rank make W ranks x N clips the
same objective as one process with W*N clips: the loss and (with the gradient-carrying gather)
the gradient, and, end to end, a MoCo run with a queue (weights, momentum encoder and queue).
Real torchrun + gloo. Equal up to float rounding (the sums run in another order), not bitwise."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from .conftest import HERE, ckpt, cli_cmd, run, torchrun_cmd

REPO = HERE.parents[1]


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


def moco_args(run_dir: str, root: Path, batch: int) -> list[str]:
    # SGD, as ddp_tiny: Adam would blow the rounding noise up into full-size updates
    return ["train", str(REPO / "configs" / "debug" / "moco_tiny.yaml"), f"run.dir={run_dir}",
            f"data.train.dataset.root={root}", f"data.batch_size={batch}", "model.queue_size=24",
            "optimizer.type=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9",
            "train.epochs=2", "train.threads=1"]


@pytest.mark.slow
def test_moco_with_queue_on_2_ranks_equals_one_process_with_twice_the_batch(tmp_path,
                                                                           tiny_data_root):
    run(cli_cmd(*moco_args("one", tiny_data_root, 8)), cwd=tmp_path)
    run(torchrun_cmd(*moco_args("two", tiny_data_root, 4)), cwd=tmp_path)
    one, two = ckpt(tmp_path / "one"), ckpt(tmp_path / "two")
    assert one["trainer"]["step"] == two["trainer"]["step"] == 6
    keys = one["model"].keys()
    assert keys == two["model"].keys()
    assert {"queue", "queue_ptr"} <= keys and any(k.startswith("momentum.") for k in keys)
    for k in keys - {"queue"}:
        assert torch.allclose(one["model"][k].float(), two["model"][k].float(), rtol=1e-4,
                              atol=1e-6), k
    # the same keys, queued in another order: the sampler deals a global batch to the ranks
    # round-robin, and the gather puts rank 0's share first (the loss does not see the order)
    distance = torch.cdist(two["model"]["queue"], one["model"]["queue"])
    nearest = distance.min(dim=1)
    assert nearest.values.max() < 1e-5 and len(set(nearest.indices.tolist())) == 24
    losses = [[r["train/loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl")
                                            .read_text().splitlines()) if "train/loss" in r]
              for d in ("one", "two")]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], rel=1e-5)
