"""The SimCLR debug recipe, run end to end as a real process, learns: its loss ends below
chance, with and without time-reversed negatives (whether a probe on it beats random init is
benchmarks/contrastive_probe.py, minutes)."""
from __future__ import annotations

import json
import math

import pytest

from conftest import REPO, run_tubelet

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("reversed_negatives", [False, True])
def test_simclr_debug_recipe_learns_below_chance(tmp_path, tiny_data_root, reversed_negatives):
    """configs/debug/simclr_tiny.yaml as shipped (18 steps of 8 videos) and with time-reversed
    negatives: the loss of its last 6 steps is below chance, ln(2N'-1) for N' videos a step
    (uniform logits), and below its first 6 steps'. Chance: 8 videos ln 15, with their
    reversals 16 videos ln 31."""
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
