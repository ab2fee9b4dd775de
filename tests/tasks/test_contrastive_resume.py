"""A MoCo run with a queue, SIGKILLed at a random step and resumed, ends bit-identical to an
uninterrupted run: weights, optimizer, the momentum encoder and the queue (all in the model's
state, so in every checkpoint). Real processes, a real signal."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_states_equal, kill_at_step, run_tubelet, tubelet_cmd
from tubelet.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
STEPS = 6  # 24 clips / batch 8 = 3 steps x 2 epochs


def args(root: Path, run_dir: str) -> list[str]:
    return ["train", str(REPO / "configs" / "debug" / "moco_tiny.yaml"),
            f"data.train.dataset.root={root}", f"run.dir={run_dir}", "model.queue_size=24",
            "train.epochs=2", "train.checkpoint_interval=1", "train.threads=1"]


def test_sigkill_then_resume_is_exact_for_momentum_encoder_and_queue(tmp_path, tiny_data_root):
    run_tubelet(*args(tiny_data_root, "ref"), cwd=tmp_path, timeout=300)
    rng = random.Random(16)
    kill_at_step(tubelet_cmd(*args(tiny_data_root, "run")), tmp_path / "run" / "checkpoints",
                 rng.randint(1, STEPS - 3), cwd=tmp_path, rng=rng)
    killed_at = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["trainer"]["step"]
    assert killed_at < STEPS
    proc = run_tubelet(*args(tiny_data_root, "run"), cwd=tmp_path, timeout=300)
    assert f"step {killed_at}" in proc.stderr  # it resumed rather than starting over
    done = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    ref = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    assert_states_equal(done, ref)
    momentum = [k for k in ref["model"] if k.startswith("momentum.")]
    assert momentum and "queue" in ref["model"]
    for k in momentum + ["queue", "queue_ptr"]:
        assert torch.equal(done["model"][k], ref["model"][k]), k
    # the momentum copy really moved away from the online encoder, and the queue filled
    assert not torch.equal(ref["model"]["momentum.backbone.blocks.0.mlp.fc1.weight"],
                           ref["model"]["backbone.blocks.0.mlp.fc1.weight"])
    assert int(ref["model"]["queue_ptr"]) == (STEPS * 16) % 24
