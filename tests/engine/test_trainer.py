"""Trainer behaviour in-process on the debug recipe: accumulation, AMP, schedule, best."""
import json

import pytest
import torch

from conftest import DEBUG_RECIPE, assert_every_tensor_equal
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.registry import ConfigError


def trainer_for(tmp_path, tiny_data_root, *overrides):
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={tiny_data_root}",
                                     f"run.dir={tmp_path / 'run'}", "train.progress=false",
                                     *overrides])
    return build_trainer(cfg)


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_accumulation_equals_the_larger_batch(tmp_path, tiny_data_root):
    """batch 4 x accum 2 takes the same samples per optimizer step as batch 8, and the loss is
    scaled so the gradients agree; drop path is off, as randomness would differ per batch.
    SGD, because Adam turns the float noise of the (mathematically zero) key-bias gradient
    into full-size steps, which would compare rounding, not accumulation."""
    common = ["train.epochs=2", "model.drop_path_rate=0.0", "data.val=null",
              "optimizer.type=sgd", "optimizer.lr=0.5", "optimizer.momentum=0.9"]
    a = trainer_for(tmp_path / "a", tiny_data_root, *common, "data.batch_size=8")
    init = params(a)
    a.fit()
    b = trainer_for(tmp_path / "b", tiny_data_root, *common, "data.batch_size=4",
                    "train.accum_steps=2")
    b.fit()
    assert a.step == b.step == 6  # 24 clips / 8 per step x 2 epochs
    pa, pb = params(a), params(b)
    assert not torch.equal(pa["head.weight"], init["head.weight"])  # it trained
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=1e-5, msg=k)


def test_bf16_autocast_trains_on_cpu(tmp_path, tiny_data_root):
    t = trainer_for(tmp_path / "bf", tiny_data_root, "train.amp=bf16", "train.epochs=1")
    before = params(t)
    metrics = t.fit()
    assert "val/acc1" in metrics
    assert any(not torch.equal(before[k], v) for k, v in params(t).items())


@pytest.mark.parametrize("clip", ["1.0", "null"])
def test_fp16_overflow_is_skipped_by_the_scaler_and_counted_not_a_nan_stop(tmp_path,
                                                                           tiny_data_root, clip):
    """An oversized initial loss scale emulates fp16 overflow (CPU GradScaler, the same code
    as CUDA's): the first steps' gradients are inf. With `nan_guard: stop` (the default) the
    run must finish: each overflow step skipped, the scale halved, the count logged."""
    init_scale = 2.0 ** 20
    t = trainer_for(tmp_path / clip, tiny_data_root, "train.amp=fp16", "train.device=cpu",
                    f"train.fp16_init_scale={init_scale}", f"train.clip_grad={clip}",
                    "train.epochs=2", "data.val=null")
    before = params(t)
    t.fit()
    assert t.step == 12
    n = t.overflow_steps
    print(f"clip_grad={clip}: {n} of 12 steps overflowed and were skipped")
    assert 0 < n < 12  # some skipped, the rest trained
    assert t.scaler.get_scale() == init_scale * 0.5 ** n  # lowered once per overflow, no growth
    assert any(not torch.equal(before[k], v) for k, v in params(t).items())
    rows = [json.loads(x) for x in (tmp_path / clip / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/overflow_steps"] for r in rows if "train/overflow_steps" in r]
    assert logged and logged[-1] == n and logged == sorted(logged)
    saved = torch.load(tmp_path / clip / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["trainer"]["overflow_steps"] == n


def test_fp16_overflow_on_one_rank_is_agreed(tmp_path, tiny_data_root, monkeypatch):
    """With FSDP2 each rank unscales its own gradient shard: an overflow seen by another rank
    (the agreed flag of the guard's all-reduce) must make this rank's scaler skip and back off
    too. Emulated by an all-reduce that reports an overflow from 'another rank' at step 1."""
    from tubelet import distributed as dist
    # per-tensor AdamW: a fused one is always called and skips on the device (found_inf),
    # so counting optimizer.step calls is the oracle only without fusion
    t = trainer_for(tmp_path, tiny_data_root, "train.amp=fp16", "train.device=cpu",
                    "train.epochs=1", "data.val=null", "optimizer.fused=false")
    real = dist.all_reduce_max

    def other_rank_overflowed(flags):
        flags = real(flags)
        if t.step == 1:
            flags[2] = 1.0  # slot 2: some rank's fp16 gradients overflowed
        return flags
    monkeypatch.setattr(dist, "all_reduce_max", other_rank_overflowed)
    updates = []
    step = t.optimizer.step
    t.optimizer.step = lambda *a, **k: (updates.append(t.step), step(*a, **k))[1]
    t.fit()
    assert t.overflow_steps == 1 and 1 not in updates and updates == [0, 2, 3, 4, 5]
    assert t.scaler.get_scale() == 2.0 ** 15


def test_lr_follows_warmup_and_cosine_per_step(tmp_path, tiny_data_root):
    t = trainer_for(tmp_path / "lr", tiny_data_root, "train.epochs=2", "data.val=null",
                    "schedule.min_lr=1e-5")
    seen = []
    step = t.train_step

    def recording_step(batch):
        stepped = step(batch)
        seen.append(t.optimizer.param_groups[0]["lr"])
        return stepped
    t.train_step = recording_step
    t.fit()
    assert seen[0] == 0.0  # warmup starts at 0 (step 0 of 6 warmup steps)
    assert seen[5] == pytest.approx(1e-3 * 5 / 6)
    assert seen[6] == pytest.approx(1e-3)  # end of warmup: the peak
    assert seen[-1] < 1e-4 and all(a >= b for a, b in zip(seen[6:], seen[7:]))


# ---------------------------------------------------------------- stop signals and Ctrl-C


class ClosingLogger:
    """Wraps the run's logger to count close() calls."""

    def __init__(self, inner):
        self.inner, self.closed = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def close(self):
        self.closed += 1
        self.inner.close()


def test_sigint_saves_exit_130_and_the_logger_closes_on_every_way_out(tmp_path, tiny_data_root):
    from tubelet.engine.guard import EXIT_INTERRUPTED, Preempted
    import signal
    # what fit() found (the worker's handler; tests/conftest.py puts it back after each test)
    before = signal.getsignal(signal.SIGTERM)
    t = trainer_for(tmp_path / "a", tiny_data_root, "train.epochs=1", "data.val=null")
    t.logger = ClosingLogger(t.logger)
    t.guard.signals.received = "SIGINT"  # as if Ctrl-C came during the first step
    with pytest.raises(Preempted, match=r"interrupted \(SIGINT\): checkpoint saved at step 1") as e:
        t.fit()
    assert e.value.exit_code == EXIT_INTERRUPTED and t.logger.closed == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # leaving: the launcher's is moot
    t.guard.signals.restore()
    assert signal.getsignal(signal.SIGTERM) is before
    assert (tmp_path / "a" / "run" / "checkpoints" / "step_00000001.pt").is_file()
    # a second Ctrl-C (KeyboardInterrupt) and a bug: the logger is closed too
    for error in (KeyboardInterrupt, RuntimeError):
        t = trainer_for(tmp_path / error.__name__, tiny_data_root, "train.epochs=1")
        t.logger = ClosingLogger(t.logger)

        def boom(batch, error=error):
            raise error
        t.train_step = boom
        with pytest.raises(error):
            t.fit()
        assert t.logger.closed == 1


def test_stop_signals_are_agreed_with_ctrl_c_winning(monkeypatch):
    import signal

    from tubelet.engine.guard import StopSignals
    before = signal.getsignal(signal.SIGTERM)
    s = StopSignals()
    with s:
        signal.raise_signal(signal.SIGTERM)
        assert s.received == "SIGTERM" and s.level == 1
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: a stop, exit 130
        assert s.received == "SIGINT" and s.level == 2
        signal.raise_signal(signal.SIGTERM)  # a launcher's SIGTERM after it: still 130
        assert s.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C aborts at once
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def tubelet_popen(args, cwd, env=None):
    import subprocess
    import sys
    env = {**__import__("os").environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           **(env or {})}
    # its own session, so a killpg reaches it and its loader workers as a terminal's Ctrl-C does
    return subprocess.Popen([sys.executable, "-m", "tubelet.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(proc, path, timeout=120):
    import time
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.005)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_that_step_and_resume_equals_uninterrupted(tmp_path,
                                                                         tiny_data_root):
    """Ctrl-C to the process group (the trainer and its 2 loader workers) mid-epoch: exit 130
    after 'checkpoint saved at step N', the checkpoint is at step N, and a resume ends with
    every tensor equal to an uninterrupted run. A second Ctrl-C aborts without saving. The
    run is held at step 3 (a test-only hook) while the signal is sent: on a fast machine the
    24 steps take less than a test's polling needs to catch one."""
    import os
    import re
    import signal
    from pathlib import Path
    from tubelet.engine.checkpoint import list_checkpoints
    hold, reached = tmp_path / "hold", tmp_path / "reached"
    hold.touch()
    args = lambda run, *more: ["train", str(DEBUG_RECIPE),  # noqa: E731
                               f"data.train.root={tiny_data_root}", f"run.dir={run}",
                               "train.progress=false", "train.epochs=1",
                               "data.batch_size=1",  # 24 steps: the signal lands mid-epoch
                               "train.checkpoint_interval=0", "train.log_interval=1",
                               "data.num_workers=2", *more]
    env = {"PYTHONPATH": str(Path(__file__).parents[1] / "distributed")}  # dist_tasks' hook
    held = lambda run, hold: args(run, "imports=[dist_tasks]",  # noqa: E731
                                  f"hooks=[{{type: hold_while_file, path: '{hold}', "
                                  f"at_step: 3, reached: '{reached}'}}]")
    ref = tubelet_popen(held("ref", tmp_path / "never"), tmp_path, env=env)  # held by nothing
    proc = tubelet_popen(held("run", hold), tmp_path, env=env)
    wait_for(proc, reached)
    os.killpg(proc.pid, signal.SIGINT)
    hold.unlink()  # the step ends, and with it the agreed stop
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    said = re.findall(r"interrupted \(SIGINT\): checkpoint saved at step (\d+)", stderr)
    # the signal came after step 3's guard check: step 4's check agrees on it, and saves
    assert said == ["4"], stderr[-3000:]
    step = 4
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["trainer"]["step"] == step and saved["trainer"]["batch_in_epoch"] == step
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == \
        [f"step_{step:08d}.pt"]  # the interrupt's checkpoint is the only one
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # every row taken, written on the way out
    assert ref.wait(timeout=240) == 0
    resumed = tubelet_popen(held("run", hold), tmp_path, env=env)  # the same recipe, not held
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0 and f"step {step}" in stderr, stderr[-3000:]
    assert_every_tensor_equal(torch.load(tmp_path / "run" / "checkpoints" / "last.pt",
                                         weights_only=True),
                              torch.load(tmp_path / "ref" / "checkpoints" / "last.pt",
                                         weights_only=True))
    print(f"Ctrl-C at step {step}: exit 130, resumed, every tensor equal to the uninterrupted run")



def test_a_second_ctrl_c_aborts_at_once_without_saving(tmp_path, tiny_data_root, monkeypatch,
                                                       capsys):
    """Through the CLI's own main(): two SIGINTs inside one step (real signals, delivered to
    this process) abort in that step: exit 130, no checkpoint, no traceback."""
    import signal
    from tubelet.cli import main
    from tubelet.engine.checkpoint import list_checkpoints
    from tubelet.engine.trainer import Trainer
    real_step = Trainer.train_step

    def step_then_two_ctrl_c(self, batch):
        stepped = real_step(self, batch)
        if self.step == 2:
            signal.raise_signal(signal.SIGINT)  # the first: save at the end of this step
            signal.raise_signal(signal.SIGINT)  # the second: abort now
        return stepped
    monkeypatch.setattr(Trainer, "train_step", step_then_two_ctrl_c)
    # the handler the run found: Python's default_int_handler, or SIG_IGN where the suite was
    # started in the background by a non-interactive shell (POSIX: such jobs ignore SIGINT)
    before = signal.getsignal(signal.SIGINT)
    code = main(["train", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}",
                 f"run.dir={tmp_path / 'run'}", "train.progress=false",
                 "train.checkpoint_interval=0"])
    err = capsys.readouterr().err
    log = __import__("logging").getLogger("tubelet")  # main() pointed it at captured stderr
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.propagate = True
    assert code == 130 and "interrupted (no checkpoint saved)" in err
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")
    assert signal.getsignal(signal.SIGINT) is before  # the abort put it back
