"""Preemption, world-size change and elastic restart under real torchrun launches (gloo, CPU).

- SIGTERM to rank 0 only: both ranks agree at the next step, save one checkpoint at the same
  step, and exit with 75; resuming ends bit-identical to an uninterrupted 2-rank run.
- That checkpoint resumed by ONE process (global batch kept): same state, the sample counter
  continues, and it ends within float noise of the 2-rank run.
- A rank SIGKILLed under `--max-restarts=1`: torchrun restarts both, they auto-resume and end
  bit-identical to the uninterrupted run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.engine.checkpoint import list_checkpoints

from .conftest import (DDP_RECIPE, STEPS, assert_states_equal, ckpt, cli_cmd, env,
                       max_param_diff, run, torchrun_cmd, train_args, worker_pids)

pytestmark = pytest.mark.slow
EXIT_PREEMPTED = 75


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.endswith("_time")} for x in lines]


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def logged_step(run_dir: Path) -> int:
    try:
        return max((r["step"] for r in rows(run_dir)), default=0)
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or a line half-written
        return 0


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, tiny_data_root) -> tuple[Path, str, int]:
    """A 2-rank run whose rank 0 alone got SIGTERM at step >= 8. Returns (cwd, the torchrun
    stderr, the step of the checkpoint), with an untouched copy of the run dir in cwd/copy."""
    cwd = tmp_path_factory.mktemp("preempt")
    proc = subprocess.Popen(torchrun_cmd(*train_args(tiny_data_root, "run")), cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: logged_step(cwd / "run") >= 8, proc, "step 8")
        os.kill(worker_pids(proc.pid)[0], signal.SIGTERM)  # rank 0 only, not the agent
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0, "the run finished before the signal landed"
    step = ckpt(cwd / "run")["trainer"]["step"]
    shutil.copytree(cwd / "run", cwd / "copy")
    return cwd, stderr, step


def test_sigterm_to_rank0_makes_both_ranks_save_the_same_step_and_exit(preempted):
    _, stderr, step = preempted
    assert 8 <= step < STEPS
    said = dict(re.findall(r"rank (\d): preempted \(.*?\): checkpoint saved at step (\d+)", stderr))
    assert said == {"0": str(step), "1": str(step)}, stderr[-3000:]
    assert "rank 0: preempted (SIGTERM)" in stderr
    assert f"exitcode  : {EXIT_PREEMPTED}" in stderr  # torchrun's report of its workers
    print(f"SIGTERM to rank 0: both ranks saved step {step} and exited {EXIT_PREEMPTED}")


def test_resume_after_preemption_is_bit_exact(preempted, tiny_data_root, ddp_reference):
    cwd, _, step = preempted
    proc = run(torchrun_cmd(*train_args(tiny_data_root, "run")), cwd=cwd)
    assert f"step {step}" in proc.stderr  # it resumed rather than starting over
    assert_states_equal(ckpt(cwd / "run"), ckpt(ddp_reference))
    assert rows(cwd / "run") == rows(ddp_reference)


def test_world_size_2_checkpoint_resumes_on_1_process(preempted, tiny_data_root,
                                                      ddp_reference, tmp_path):
    cwd, _, step = preempted
    saved = ckpt(cwd / "copy")
    # the state as loaded by one process (batch 4 = the same global batch) equals the saved one
    cfg = load_config(DDP_RECIPE, [f"data.train.root={tiny_data_root}", "data.batch_size=4",
                                   f"run.dir={tmp_path / 'probe'}",
                                   f"resume={cwd / 'copy' / 'checkpoints' / 'last.pt'}"])
    trainer = build_trainer(cfg)
    trainer.resume_from_checkpoint()
    loaded = trainer.state_dict()
    t = loaded["trainer"]
    assert (t["world_size"], t["batches"], t["global_batch"]) == (1, "world size 1 x batch 4", 4)
    assert t["step"] == saved["trainer"]["step"] == step
    assert t["samples_in_epoch"] == saved["trainer"]["samples_in_epoch"]  # the counter carries
    assert t["batch_in_epoch"] * 4 == t["samples_in_epoch"]
    assert_states_equal({**loaded, "trainer": 0}, {**saved, "trainer": 0})  # model, optimizer

    # a different global batch is refused, naming both
    bad = run(cli_cmd(*train_args(tiny_data_root, str(cwd / "copy"))), cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert "global batch is 4 (world size 2 x batch 2" in bad.stderr
    assert "this run's is 2 (world size 1 x batch 2" in bad.stderr

    # and training goes on from the next unseen sample to the same end, within float noise
    proc = run(cli_cmd(*train_args(tiny_data_root, str(cwd / "copy"), "data.batch_size=4")),
               cwd=tmp_path)
    assert f"step {step}" in proc.stderr
    end = ckpt(cwd / "copy")
    assert end["trainer"]["step"] == STEPS and end["trainer"]["world_size"] == 1
    assert [r["step"] for r in rows(cwd / "copy")] == [r["step"] for r in rows(ddp_reference)]
    diff = max_param_diff(end, ckpt(ddp_reference))
    print(f"world size 2 -> 1 at step {step}: max |param| difference at the end {diff:.2e}")
    assert diff <= 1e-6


def test_killed_rank_is_restarted_by_torchrun_and_ends_exact(tmp_path, tiny_data_root,
                                                              ddp_reference):
    cmd = torchrun_cmd(*train_args(tiny_data_root, "run", "train.checkpoint_interval=2"),
                       launcher=("--standalone", "--max-restarts=1"))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    try:
        wait_for(lambda: any(int(p.stem[5:]) >= 8 for p in list_checkpoints(ckpt_dir)), proc,
                 "checkpoint 8")
        os.kill(worker_pids(proc.pid)[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    resumed = re.findall(r"resumed from \S+ at epoch \d+ step (\d+)", stderr)
    assert resumed and STEPS > int(resumed[0]) >= 8, stderr[-3000:]
    assert_states_equal(ckpt(tmp_path / "run"), ckpt(ddp_reference))
    print(f"rank 1 killed after checkpoint {resumed[0]}: restarted, resumed, ended bit-exact")
