"""A MoCo run with a queue, SIGKILLed at a random step and resumed, ends bit-identical to an
uninterrupted run: weights, optimizer, the momentum encoder and the queue (all in the model's
state, so in every checkpoint). Real processes, a real signal. And the SimCLR debug recipe,
run end to end, learns: its loss ends below chance, with and without time-reversed negatives."""
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


@pytest.mark.parametrize("reversed_negatives", [False, True])
def test_simclr_debug_recipe_learns_below_chance(tmp_path, tiny_data_root, reversed_negatives):
    """configs/debug/simclr_tiny.yaml as shipped (18 steps of 8 videos) and with time-reversed
    negatives: the loss of its last 6 steps is below chance, ln(2N'-1) for N' videos a step
    (uniform logits), and below its first 6 steps'. Chance: 8 videos ln 15, with their
    reversals 16 videos ln 31."""
    import json
    import math
    run_tubelet("train", str(REPO / "configs" / "debug" / "simclr_tiny.yaml"),
                f"data.train.dataset.root={tiny_data_root}", "run.dir=run", "train.threads=1",
                f"task.reversed_negatives={str(reversed_negatives).lower()}",
                cwd=tmp_path, timeout=300)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [r["train/loss"] for r in map(json.loads, rows) if "train/loss" in r]
    assert len(losses) == 18
    chance = math.log(2 * (16 if reversed_negatives else 8) - 1)
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < chance and last < first, (first, last, chance)
