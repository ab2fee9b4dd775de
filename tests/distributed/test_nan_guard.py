"""The NaN guard under torchrun: a NaN loss on rank 1 only stops (or skips on) both ranks at
the same step, before optimizer.step(), in seconds rather than at a collective's timeout."""
from __future__ import annotations

import re
import time

import pytest
import torch

from tubelet.engine.checkpoint import list_checkpoints

from .conftest import STEPS, assert_every_tensor_equal, ckpt, run, torchrun_cmd, train_args

pytestmark = pytest.mark.slow
EXIT_NONFINITE = 3


def nan_args(root, stamp, *extra: str) -> list[str]:
    return train_args(root, "run", "imports=[dist_tasks]", "task.type=nan_on_rank",
                      "task.nan_rank=1", f"task.stamp_file={stamp}",
                      "train.checkpoint_interval=1", *extra)


def test_nan_on_rank1_stops_both_ranks_before_the_update(tmp_path, tiny_data_root):
    stamp = tmp_path / "nan_at"
    proc = run(torchrun_cmd(*nan_args(tiny_data_root, stamp, "task.nan_calls=[5]")),
               cwd=tmp_path, check=False, timeout=90)
    ended = time.time()
    assert proc.returncode != 0
    # the 5th loss call is the 5th step: 4 updates done (steps count from 0)
    said = re.findall(r"rank (\d): train: non-finite loss at step (\d+) on rank\(s\) \[1\]; "
                      r"no rank applied the update", proc.stderr)
    assert sorted(said) == [("0", "4"), ("1", "4")], proc.stderr[-3000:]
    assert f"exitcode  : {EXIT_NONFINITE}" in proc.stderr
    seconds = ended - float(stamp.read_text())
    print(f"NaN on rank 1 at step 4: both ranks out, torchrun exited {seconds:.1f} s later")
    assert seconds < 20
    last = ckpt(tmp_path / "run")
    assert last["trainer"]["step"] == 4 and len(list_checkpoints(tmp_path / "run" / "checkpoints")) == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_skip_policy_skips_on_all_ranks_then_aborts_after_n_in_a_row(tmp_path, tiny_data_root):
    stamp = tmp_path / "nan_at"
    args = nan_args(tiny_data_root, stamp, "task.nan_calls=[3,9,10]", "train.nan_guard=skip",
                    "train.nan_skip_limit=1", "train.keep_last=20")
    proc = run(torchrun_cmd(*args), cwd=tmp_path, check=False, timeout=90)
    assert proc.returncode != 0
    assert "non-finite loss at step 2 on rank(s) [1]: update skipped on all ranks (1 in a row)" \
        in proc.stderr
    said = re.findall(r"rank (\d): train: 2 non-finite steps in a row, more than "
                      r"train.nan_skip_limit=1; the last: non-finite loss at step 9", proc.stderr)
    assert sorted(said) == ["0", "1"], proc.stderr[-3000:]
    # step 2's update was skipped, training went on, and no NaN ever reached the weights
    assert ckpt(tmp_path / "run")["trainer"]["step"] == 9 < STEPS  # a skipped step counts
    for path in list_checkpoints(tmp_path / "run" / "checkpoints"):
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values()), path
    # skipped on the device (fused AdamW's found_inf, the agreed flag): the weights and the
    # optimizer state after step 2 are those before it, and training went on after it
    states = {n: torch.load(tmp_path / "run" / "checkpoints" / f"step_{n:08d}.pt",
                            weights_only=True) for n in (2, 3, 4)}
    assert_every_tensor_equal(states[2]["model"], states[3]["model"])
    assert_every_tensor_equal(states[2]["optimizer"]["state"], states[3]["optimizer"]["state"])
    assert not torch.equal(states[3]["model"]["head.weight"], states[4]["model"]["head.weight"])
