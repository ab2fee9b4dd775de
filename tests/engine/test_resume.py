"""Exact resume: a run killed with SIGKILL at a random step and restarted with resume=auto ends
bit-identical to an uninterrupted run. Real processes, real signals, real checkpoints."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import (DEBUG_RECIPE, assert_states_equal, kill_at_step, losses_and_metrics,
                      run_tubelet, tubelet_cmd)
from tubelet.engine.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow
STEPS = 18  # debug recipe: 24 train clips / batch 4 = 6 steps x 3 epochs


def args(root: Path, run_dir: str, *extra: str) -> list[str]:
    # threads pinned: the thread count is part of the float arithmetic, and `auto` gives each
    # data.num_workers its own count; these runs compare worker counts against one reference
    return ["train", str(DEBUG_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}",
            "train.checkpoint_interval=1", "train.threads=1", *extra]


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, tiny_data_root) -> Path:
    cwd = tmp_path_factory.mktemp("ref")
    run_tubelet(*args(tiny_data_root, "ref"), cwd=cwd)
    return cwd / "ref"


@pytest.fixture(scope="module")
def reference(reference_dir) -> dict:
    return load_checkpoint(reference_dir / "checkpoints" / "last.pt")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_sigkill_at_random_step_then_resume_is_bit_exact(tmp_path, tiny_data_root, reference,
                                                         reference_dir, num_workers):
    rng = random.Random(1000 + num_workers)
    kill_step = rng.randint(1, STEPS - 5)
    cmd = tubelet_cmd(*args(tiny_data_root, "run", f"data.num_workers={num_workers}"))
    kill_at_step(cmd, tmp_path / "run" / "checkpoints", kill_step, cwd=tmp_path, rng=rng)
    killed_at = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["trainer"]["step"]
    assert killed_at < STEPS, f"kill at step {kill_step} came too late"
    proc = run_tubelet(*args(tiny_data_root, "run", f"data.num_workers={num_workers}"), cwd=tmp_path)
    assert f"step {killed_at}" in proc.stderr  # it really resumed, rather than starting over
    assert_states_equal(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt"), reference)
    # and the log reads as one run: rows the killed process wrote past its checkpoint are gone
    assert losses_and_metrics(tmp_path / "run") == losses_and_metrics(reference_dir)


def test_corrupt_newest_checkpoint_falls_back_and_still_ends_exact(tmp_path, tiny_data_root,
                                                                    reference):
    run_tubelet(*args(tiny_data_root, "run", "train.epochs=3"), cwd=tmp_path)
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    newest, previous = ckpts[0], ckpts[1]
    (tmp_path / "run" / "checkpoints" / "last.pt").unlink()
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn write
    proc = run_tubelet(*args(tiny_data_root, "run"), cwd=tmp_path)
    assert f"{newest.name} does not load" in proc.stderr
    assert f"resumed from run/checkpoints/{previous.name}" in proc.stderr
    assert_states_equal(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt"), reference)


def test_fixed_seed_gives_identical_losses_and_metrics(tmp_path, tiny_data_root, reference_dir):
    run_tubelet(*args(tiny_data_root, "a", "data.num_workers=2"), cwd=tmp_path)
    rows = losses_and_metrics(tmp_path / "a")
    assert any("val/acc1" in r for r in rows) and any("train/loss" in r for r in rows)
    assert rows == losses_and_metrics(reference_dir)
