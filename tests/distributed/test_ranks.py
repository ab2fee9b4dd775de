"""What every rank must do alike, under real torchrun launches (gloo, CPU): per-rank random
streams and their resume, FSDP2 units and the EMA hook's full checkpoints, a bad-data stop,
and stop signals during eval and from the launcher."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tubelet.build import build_trainer
from tubelet.config import load_config

from .conftest import (DDP_RECIPE, assert_every_tensor_equal, assert_states_equal, ckpt,
                       cli_cmd, env, max_param_diff, run, torchrun_cmd, train_args, worker_pids)

pytestmark = pytest.mark.slow
MAE_RECIPE = DDP_RECIPE.parent / "mae_pretrain_tiny.yaml"
EXIT_USER_ERROR, EXIT_PREEMPTED = 2, 75



def mae_args(root: Path, run_dir: Path | str, record: Path, *extra: str) -> list[str]:
    """`record` is a folder in the run's cwd, named relative to it: the recipe (which a resume
    compares with the checkpoint's) is then the same for every run that records."""
    record.mkdir(parents=True, exist_ok=True)
    return ["train", str(MAE_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}",
            "imports=[dist_tasks]", "task.type=mask_recording_mae",
            f"task.record_dir={record.name}",
            "train.checkpoint_interval=2", "train.keep_last=10", "train.progress=false", *extra]


# ---------------------------------------------------------------- per-rank random streams
@pytest.fixture(scope="module")
def mae_reference(tmp_path_factory, tiny_data_root) -> Path:
    """An uninterrupted 2-rank MAE pretraining run (6 steps, checkpoints every 2)."""
    cwd = tmp_path_factory.mktemp("mae_ref")
    run(torchrun_cmd(*mae_args(tiny_data_root, "run", cwd / "rec")), cwd=cwd, timeout=180)
    return cwd


def test_two_ranks_draw_different_masks_and_resume_restores_each_stream(mae_reference,
                                                                        tiny_data_root,
                                                                        tmp_path):
    ref = mae_reference
    masks = [torch.load(ref / "rec" / f"masks.rank{r}.pt") for r in (0, 1)]
    assert len(masks[0]) == len(masks[1]) == 6
    for step, (m0, m1) in enumerate(zip(*masks)):
        assert m0.shape == m1.shape and not torch.equal(m0, m1), f"step {step}: same masks"
    # resume at the same world size from step 2: each rank continues its own stream
    resume = ref / "run" / "checkpoints" / "step_00000002.pt"
    run(torchrun_cmd(*mae_args(tiny_data_root, "again", tmp_path / "rec", f"resume={resume}")),
        cwd=tmp_path, timeout=180)
    again = [torch.load(tmp_path / "rec" / f"masks.rank{r}.pt") for r in (0, 1)]
    for r in (0, 1):  # steps 2..5 of the resumed run drew what the uninterrupted one drew
        assert len(again[r]) == 4
        assert all(torch.equal(a, b) for a, b in zip(again[r], masks[r][2:])), f"rank {r}"
    assert_every_tensor_equal(ckpt(tmp_path / "again"), ckpt(ref / "run"))
    print("2 ranks: masks differ at all 6 steps; resumed at step 2 on 2 ranks: every tensor "
          "of the final checkpoint equal")


def test_world_size_change_keeps_rank0_stream_and_is_deterministic(mae_reference,
                                                                   tiny_data_root, tmp_path):
    """2 -> 1 process (same global batch): rank 0 keeps its saved stream (docs/resume.md),
    so its first mask after the resume is the one the 2-rank run's rank 0 drew next (for half
    the batch); two such resumes end equal to each other."""
    ref = mae_reference
    resume = ref / "run" / "checkpoints" / "step_00000002.pt"
    ends = []
    for name in ("one_a", "one_b"):
        cwd = tmp_path / name  # the same relative run.dir and record dir as the reference's
        proc = run(cli_cmd(*mae_args(tiny_data_root, "run", cwd / "rec", f"resume={resume}",
                                     "data.batch_size=8")), cwd=cwd, timeout=180)
        assert "world size 2 -> 1" in proc.stderr
        ends.append(ckpt(cwd / "run"))
    assert_every_tensor_equal(ends[0], ends[1])
    first = torch.load(tmp_path / "one_a" / "rec" / "masks.rank0.pt")[0]  # (8, N), rank 0's
    two_rank_next = torch.load(ref / "rec" / "masks.rank0.pt")[2]  # (4, N), same stream state
    assert first.shape[0] == 8 and two_rank_next.shape[0] == 4
    # tube masks draw one row per sample: the first 4 rows of 8 match the 4 of rank 0
    assert torch.equal(first[:4], two_rank_next)


def test_fsdp2_mae_shards_every_block_and_equals_ddp(mae_reference, tiny_data_root, tmp_path):
    proc = run(torchrun_cmd(*mae_args(tiny_data_root, "fsdp", tmp_path / "rec",
                                      "distributed.strategy=fsdp")), cwd=tmp_path, timeout=180)
    units = re.findall(r"fsdp: .* units .*", proc.stderr)
    print(units[0])
    assert units == ["fsdp: 3 units (encoder.blocks.0-1, decoder.blocks.0) and the root"]
    fsdp, ddp = ckpt(tmp_path / "fsdp"), ckpt(mae_reference / "run")
    diff = max_param_diff(fsdp, ddp)
    print(f"MAE pretraining, max |param| difference FSDP2 vs DDP after 6 steps: {diff:.2e}")
    assert diff <= 1e-6
    for r in (0, 1):  # the same per-rank streams under either strategy
        a = torch.load(tmp_path / "rec" / f"masks.rank{r}.pt")
        b = torch.load(mae_reference / "rec" / f"masks.rank{r}.pt")
        assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 6


# ---------------------------------------------------------------- FSDP2 + EMA
def fsdp_ema_args(root: Path, run_dir: str, *extra: str) -> list[str]:
    return train_args(root, run_dir, "distributed.strategy=fsdp", "train.epochs=2",
                      "train.checkpoint_interval=4", "hooks=[{type: ema, decay: 0.9}]", *extra)


def test_fsdp2_ema_saves_full_tensors_and_resumes_at_2_and_at_1(tmp_path, tiny_data_root):
    proc = run(torchrun_cmd(*fsdp_ema_args(tiny_data_root, "ref")), cwd=tmp_path, timeout=180)
    assert "fsdp: 2 units (blocks.0-1) and the root" in proc.stderr
    ref = ckpt(tmp_path / "ref")
    step4 = tmp_path / "ref" / "checkpoints" / "step_00000004.pt"
    # full plain tensors: a fresh interpreter loads it with weights_only and no DTensor import
    code = ("import sys, torch; s = torch.load(sys.argv[1], weights_only=True); "
            "sh = s['hooks'][0]['shadow']; assert all(type(v) is torch.Tensor for v in sh.values()); "
            "assert 'torch.distributed.tensor' not in sys.modules; print(sh['head.weight'].shape)")
    shape = subprocess.run([sys.executable, "-c", code, str(step4)], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert shape.strip() == f"torch.Size({list(ref['model']['head.weight'].shape)})"
    shadow = ref["hooks"][0]["shadow"]
    assert shadow.keys() == ref["model"].keys()
    assert all(v.shape == ref["model"][k].shape for k, v in shadow.items())  # not a shard

    # resume at 2 ranks from step 4: every tensor (EMA included) equals the uninterrupted run
    run(torchrun_cmd(*fsdp_ema_args(tiny_data_root, "two", f"resume={step4}")), cwd=tmp_path,
        timeout=180)
    assert_every_tensor_equal(ckpt(tmp_path / "two"), ref)

    # resume at 1 process (global batch kept): the EMA loads whole, then ends within float noise
    # an absolute run dir: the in-process build writes into it, not into the test's cwd
    one_args = fsdp_ema_args(tiny_data_root, str(tmp_path / "one"), f"resume={step4}",
                             "data.batch_size=4")
    trainer = build_trainer(load_config(DDP_RECIPE, one_args[2:]))
    trainer.resume_from_checkpoint()
    trainer.hooks[0].before_train(trainer)
    saved = torch.load(step4, weights_only=True)["hooks"][0]
    assert_every_tensor_equal(trainer.hooks[0].state_dict(), saved)
    from tubelet import rundir
    rundir.finish_all()  # the in-process build holds the run dir's lock until it ends
    run(cli_cmd(*one_args), cwd=tmp_path, timeout=180)
    one = ckpt(tmp_path / "one")
    ema_diff = max((one["hooks"][0]["shadow"][k] - v).abs().max().item()
                   for k, v in shadow.items())
    print(f"FSDP2+EMA 2 -> 1 process at step 4: max |EMA| difference at the end {ema_diff:.2e}, "
          f"|param| {max_param_diff(one, ref):.2e}")
    assert ema_diff <= 1e-6


# ---------------------------------------------------------------- exits agreed across ranks
def exit_codes(stderr: str) -> list[int]:
    """Each worker's exit code, by rank, from torchrun's failure report."""
    found = dict(re.findall(r"rank\s*:\s*(\d+) \(local_rank.*\n\s*exitcode\s*:\s*(-?\d+)", stderr))
    return [int(found[r]) for r in sorted(found)]


def watch_workers(proc: subprocess.Popen, timeout: float = 120) -> dict[int, float]:
    """{rank: wall time it was last seen alive} for a torchrun of 2 workers, until it ends."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        now = time.time()
        for rank in worker_pids(proc.pid):
            seen[rank] = now
        time.sleep(0.02)
    return seen


def test_bad_data_on_one_rank_stops_both_at_the_same_step_with_exit_2(tmp_path, tiny_data_root):
    """A file that turns bad after the startup probe is read by rank 1 alone, in the first
    step of epoch 2: with `max_bad_fraction: 0` that rank's crossing is agreed, both ranks stop
    at that step, and rank 0 (which never read the file) prints the list."""
    import shutil
    from tubelet import build
    from tubelet.data.loader import ResumableSampler
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    build._register_builtins(None)
    dataset, _ = build.build_dataset(load_config(DDP_RECIPE, [f"data.train.root={root}"])
                                     ["data"]["train"], key="data.train")
    sampler = ResumableSampler(len(dataset), batch_size=2, seed=0, rank=1, world_size=2)
    sampler.set_epoch(1)
    victim = Path(dataset.samples[next(iter(sampler))[0][0]].path)  # rank 1's first of epoch 2
    proc = subprocess.Popen(torchrun_cmd(*train_args(root, "run", "data.max_bad_fraction=0",
                                                     "train.log_interval=1")),
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"step": 6,' in metrics.read_text()):  # epoch 1 trained
        assert proc.poll() is None and time.monotonic() < deadline, "no step 6"
        time.sleep(0.01)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # fails to decode
    seen = watch_workers(proc)
    _, stderr = proc.communicate(timeout=60)
    assert exit_codes(stderr) == [EXIT_USER_ERROR, EXIT_USER_ERROR], stderr[-3000:]
    errors = re.findall(r"error: data.max_bad_fraction: 1 of 24 train files", stderr)
    assert len(errors) == 2, stderr[-3000:]
    assert stderr.count("ERROR bad train file:") == 1 and victim.name in stderr  # rank 0 lists it
    bad_lists = [f.name for f in (tmp_path / "run").glob("bad_files*.txt")]
    gap = abs(seen[0] - seen[1])
    print(f"bad file on rank 1 only ({bad_lists}): both ranks exited {EXIT_USER_ERROR}, "
          f"{gap:.2f} s apart")
    assert bad_lists == ["bad_files.rank1.txt"] and gap < 5
    assert ckpt(tmp_path / "run")["trainer"]["step"] == 6  # no update after the crossing step


def slow_eval_args(root: Path, run_dir: str, stamp: Path, *extra: str) -> list[str]:
    return train_args(root, run_dir, "imports=[dist_tasks]", "task.type=slow_eval_classification",
                      f"task.stamp_file={stamp}", "task.eval_sleep=0.5", "data.val_batch_size=2",
                      "train.epochs=2", *extra)


def test_sigterm_during_a_long_eval_stops_both_ranks_and_resume_reruns_it(tmp_path,
                                                                          tiny_data_root):
    # the reference needs the same numbers, not the long eval: no sleep (3 s of wall less;
    # the recipe record, which differs, is not compared)
    ref = run(torchrun_cmd(*slow_eval_args(tiny_data_root, "ref", tmp_path / "ref_stamp",
                                           "task.eval_sleep=0")), cwd=tmp_path, timeout=240)
    assert ref.returncode == 0
    stamp = tmp_path / "stamp"
    proc = subprocess.Popen(torchrun_cmd(*slow_eval_args(tiny_data_root, "run", stamp)),
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not stamp.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no eval started"
        time.sleep(0.02)
    sent = time.time()
    os.kill(worker_pids(proc.pid)[0], signal.SIGTERM)  # rank 0 only, up to 3 x 0.5 s of eval left
    seen = watch_workers(proc)
    _, stderr = proc.communicate(timeout=60)
    took = max(seen.values()) - sent
    print(f"SIGTERM during eval: both ranks out {took:.1f} s after the signal")
    assert exit_codes(stderr) == [EXIT_PREEMPTED, EXIT_PREEMPTED], stderr[-3000:]
    assert took < 10
    saved = ckpt(tmp_path / "run")
    assert saved["trainer"]["step"] == 6 and saved["trainer"]["epoch"] == 0  # end of epoch 1's training
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "val/acc1" not in rows  # the abandoned eval logged nothing
    proc = run(torchrun_cmd(*slow_eval_args(tiny_data_root, "run", stamp)), cwd=tmp_path,
               timeout=240)
    assert "eval epoch 1/2 step 6" in proc.stderr  # the eval ran again
    assert_every_tensor_equal(ckpt(tmp_path / "run"), ckpt(tmp_path / "ref"))
    strip = lambda text: [re.sub(r'"[a-z/_]*_time": [0-9.e-]+, ?', "", x)  # noqa: E731
                          for x in text.splitlines()]
    assert strip((tmp_path / "run" / "metrics.jsonl").read_text()) == \
        strip((tmp_path / "ref" / "metrics.jsonl").read_text())


def sigterm_rank0_trial(tmp_path: Path, root: Path, name: str) -> tuple[list[int], str]:
    """SIGTERM to rank 0 only, at step >= 2 of a 2-rank run: the workers' exit codes."""
    proc = subprocess.Popen(torchrun_cmd(*train_args(root, name, "train.log_interval=1")),
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / name / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "no step 2"
            time.sleep(0.01)
        os.kill(worker_pids(proc.pid)[0], signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    return exit_codes(stderr), stderr


@pytest.mark.parametrize("trial", range(1))  # 10 trials: tests/distributed/sigterm_trials.py
def test_sigterm_to_rank0_makes_every_rank_exit_75(tmp_path, tiny_data_root, trial):
    codes, stderr = sigterm_rank0_trial(tmp_path, tiny_data_root, "run")
    assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], stderr[-3000:]


def test_ctrl_c_to_torchrun_saves_once_on_every_rank_and_exits_130(tmp_path, tiny_data_root):
    """A terminal's Ctrl-C reaches the torchrun agent (its workers run in their own session);
    the agent forwards SIGINT to every worker: all save the same step and exit 130."""
    proc = subprocess.Popen(torchrun_cmd(*train_args(tiny_data_root, "run",
                                                     "train.log_interval=1")),
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and '"step": 2,' in metrics.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "no step 2"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGINT)  # the agent only, as the terminal does
        _, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    said = dict(re.findall(r"rank (\d): interrupted \(SIGINT\): checkpoint saved at step (\d+)",
                           stderr))
    step = ckpt(tmp_path / "run")["trainer"]["step"]
    assert said == {"0": str(step), "1": str(step)}, stderr[-3000:]
    assert "interrupted (no checkpoint saved)" not in stderr
    assert all(code == 130 for code in exit_codes(stderr)), stderr[-3000:]


def test_fp16_overflow_under_fsdp2_is_skipped_on_both_ranks(tmp_path, tiny_data_root):
    """Each FSDP2 rank unscales its own gradient shard; an oversized initial scale overflows
    the first steps: both ranks skip them and lower the scale alike, the run finishes."""
    proc = run(torchrun_cmd(*train_args(tiny_data_root, "run", "distributed.strategy=fsdp",
                                        "train.amp=fp16", "train.fp16_init_scale=1048576",
                                        "train.epochs=1", "train.clip_grad=1.0")),
               cwd=tmp_path, timeout=180)
    skipped = re.findall(r"fp16 overflow at step (\d+)", proc.stderr)
    last = ckpt(tmp_path / "run")
    print(f"FSDP2 fp16: overflow steps {skipped} of 6 skipped on both ranks")
    assert 0 < len(skipped) < 6 and last["trainer"]["overflow_steps"] == len(skipped)
    assert last["scaler"]["scale"] == 1048576 * 0.5 ** len(skipped)
    assert all(torch.isfinite(v).all() for v in last["model"].values())
