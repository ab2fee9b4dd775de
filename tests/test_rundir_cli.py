"""The run directory through the real CLI: one writer at a time, nothing written before the
checks pass, run identity and the recipe comparison on resume. Real processes and files."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (DEBUG_RECIPE, REPO, assert_states_equal, losses_and_metrics, run_tubelet,
                      tubelet_cmd, tubelet_here)
from tubelet.engine.checkpoint import load_checkpoint
from tubelet.rundir import LOCK_NAME

pytestmark = pytest.mark.slow


def args(root: Path, run_dir: str, *extra: str) -> list[str]:
    return ["train", str(DEBUG_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def wait_for_lock(run_dir: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, "the first run ended before it took the lock"
        assert time.monotonic() < deadline
        try:
            if json.loads((run_dir / LOCK_NAME).read_text())["pid"] == proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)


def same_run(a: Path, b: Path) -> None:
    assert losses_and_metrics(a) == losses_and_metrics(b)
    assert_states_equal(load_checkpoint(a / "checkpoints" / "last.pt"),
                        load_checkpoint(b / "checkpoints" / "last.pt"))
    assert (a / "config.yaml").read_bytes() == (b / "config.yaml").read_bytes()


@pytest.fixture(scope="module")
def solo(tmp_path_factory, tiny_data_root) -> Path:
    """An uninterrupted run, alone on its run dir (cwd/run, so config.yaml reads the same)."""
    cwd = tmp_path_factory.mktemp("solo")
    run_tubelet(*args(tiny_data_root, "run"), cwd=cwd)
    return cwd / "run"


def test_second_train_on_a_busy_run_dir_exits_2_at_once_and_the_first_is_untouched(
        tmp_path, tiny_data_root, solo):
    first = subprocess.Popen(tubelet_cmd(*args(tiny_data_root, "run")), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_lock(tmp_path / "run", first)
        start = time.monotonic()
        # a new interpreter: "at once" is how long a user's second command takes to refuse
        second = run_tubelet(*args(tiny_data_root, "run"), cwd=tmp_path, check=False, fresh=True)
        took = time.monotonic() - start
        assert first.poll() is None, "the first run ended before the second could race it"
    finally:
        assert first.wait(timeout=300) == 0
    assert second.returncode == 2 and "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert re.match(rf"error: run.dir: run is in use by pid {first.pid} on \S+ \(started ", line)
    print(f"second train refused in {took:.2f} s: {line}")
    assert took < 2.0
    same_run(tmp_path / "run", solo)  # the first run's files are a solo run's


def test_a_sigkilled_holders_lock_is_taken_over(tmp_path, tiny_data_root, solo):
    first = subprocess.Popen(tubelet_cmd(*args(tiny_data_root, "run")), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lock(tmp_path / "run", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    proc = run_tubelet(*args(tiny_data_root, "run"), cwd=tmp_path)
    assert f"taking over the lock of pid {first.pid} on " in proc.stderr
    same_run(tmp_path / "run", solo)


def test_refusals_write_nothing_and_allowed_changes_continue(tmp_path, tiny_data_root, solo,
                                                            capsys):
    """The first refusal of each kind is a real process; the others run the same main() in
    this process (a torch import each fewer)."""
    run = tmp_path / "run"
    shutil.copytree(solo, run)
    before = snapshot(run)
    refusals = {
        "resume=null": "already holds checkpoints",
        "model.depth=3": "another model: ",  # every checkpoint: nothing moved aside
        "optimizer.lr=0.002": "optimizer.lr: 0.001 in the run, 0.002 now",
    }
    for i, (override, expected) in enumerate(refusals.items()):
        command = args(tiny_data_root, "run", override)
        proc = (run_tubelet(*command, cwd=tmp_path, check=False) if i == 0 else
                tubelet_here(*command, cwd=tmp_path, capsys=capsys))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert expected in proc.stderr.strip().splitlines()[-1]
        after = snapshot(run)
        log = after.pop("log.txt").decode()
        assert log.strip().splitlines()[-1].endswith(proc.stderr.strip().splitlines()[-1])
        assert after == {k: v for k, v in before.items() if k != "log.txt"}, override
    # the user's own folder and config.yaml are never a run dir
    (tmp_path / "config.yaml").write_text("mine: 1\n")
    for i, override in enumerate(("run.dir=.", "run.name=..", "run.name=../escape",
                                  "run.name=" + "x" * 300)):
        command = [*args(tiny_data_root, "run", override)[:-1], override]
        proc = (run_tubelet(*command, cwd=tmp_path, check=False) if i == 0 else
                tubelet_here(*command, cwd=tmp_path, capsys=capsys))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "config.yaml").read_text() == "mine: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "run"]
    # a key that only extends the run is allowed, said, and the old config kept
    proc = run_tubelet(*args(tiny_data_root, "run", "train.epochs=4"), cwd=tmp_path)
    assert "continuing with train.epochs: 3 in the run, 4 now" in proc.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]["step"] == 24
    assert (run / "config.1.yaml").read_bytes() == before["config.yaml"]
    assert "epochs: 4" in (run / "config.yaml").read_text()


def test_a_run_that_fails_before_its_first_step_leaves_no_run_dir(tmp_path, tiny_data_root):
    proc = run_tubelet(*args(tiny_data_root, "run", "data.batch_size=1000"), cwd=tmp_path,
                       check=False)
    assert proc.returncode == 2 and "exceeds the" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_resume_restart_starts_over_and_keeps_the_old_run_aside(tmp_path, tiny_data_root, solo,
                                                                capsys):
    run = tmp_path / "run"
    shutil.copytree(solo, run)
    for p in (run / "checkpoints").glob("*.pt"):
        p.write_bytes(b"")  # every checkpoint unreadable
    # in this process (a torch import fewer): the refusal's exit is tested as a process above
    proc = tubelet_here(*args(tiny_data_root, "run"), cwd=tmp_path, capsys=capsys)
    assert proc.returncode == 2 and "none of the 4 checkpoints" in proc.stderr  # last.pt a copy now
    proc = run_tubelet(*args(tiny_data_root, "run", "resume=restart"), cwd=tmp_path)
    assert (run / "checkpoints" / "previous_1" / "metrics.jsonl").is_file()
    assert losses_and_metrics(run) == losses_and_metrics(solo)
    assert_states_equal(load_checkpoint(run / "checkpoints" / "last.pt"),
                        load_checkpoint(solo / "checkpoints" / "last.pt"))


def test_the_docs_base_example_runs_beside_its_base_without_touching_it(tmp_path):
    text = (REPO / "docs" / "recipes.md").read_text()
    block = re.search(r"```yaml\n(# configs/mine.yaml.*?)```", text, re.S).group(1)
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(REPO / "configs" / "quickstart.yaml", configs / "quickstart.yaml")
    (configs / "mine.yaml").write_text(block)
    small = [f"data.train.root={tmp_path / 'synth'}", "data.train.generate=true",
             "data.train.num_train_per_class=2",
             "data.train.num_test_per_class=1", "train.epochs=1", "data.num_workers=0",
             "train.tensorboard=false"]
    run_tubelet("train", str(configs / "quickstart.yaml"), *small, cwd=tmp_path, timeout=300)
    before = snapshot(tmp_path / "runs" / "quickstart")
    proc = run_tubelet("train", str(configs / "mine.yaml"), *small, cwd=tmp_path, timeout=300)
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path / "runs" / "quickstart") == before
    mine = load_checkpoint(tmp_path / "runs" / "mine" / "checkpoints" / "last.pt")
    assert mine["recipe"]["model"]["img_size"] == 32 and mine["recipe"]["run"]["name"] == "mine"


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_a_bad_checkpoint_named_on_the_command_line_is_one_line_with_the_real_reason(
        tmp_path, tiny_data_root, capsys):
    """Every command that reads a checkpoint file, on every kind of bad file. The first (a
    hostile pickle through `train`) is a real process; the rest run the same main() in this
    process (five torch imports fewer): the refusal is the code's, not the interpreter's."""
    import torch
    torch.save({"model": Evil()}, tmp_path / "hostile.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(2)}, "trainer": {"step": 1}}, tmp_path / "foreign.pt")
    root = f"data.train.root={tiny_data_root}"
    commands = {
        ("train", "hostile"): ["train", str(DEBUG_RECIPE), root, "resume=hostile.pt"],
        ("train", "foreign"): ["train", str(DEBUG_RECIPE), root, "resume=foreign.pt"],
        ("pretrained", "empty"): ["train", str(DEBUG_RECIPE), root, "model.pretrained=empty.pt"],
        ("eval", "hostile"): ["eval", str(DEBUG_RECIPE), root, "checkpoint=hostile.pt"],
        ("eval", "foreign"): ["eval", str(DEBUG_RECIPE), root, "checkpoint=foreign.pt"],
        ("export", "hostile"): ["export", "hostile.pt", "out.safetensors"],
    }
    reasons = {"hostile": "unsupported GLOBAL posix.system", "empty": "empty or truncated",
               "foreign": "another model: "}
    for i, ((what, kind), command) in enumerate(commands.items()):
        proc = (run_tubelet(*command, cwd=tmp_path, check=False) if i == 0 else
                tubelet_here(*command, cwd=tmp_path, capsys=capsys))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (what, proc.stderr)
        assert lines[-1].startswith("error: ") and reasons[kind] in lines[-1], (what, lines[-1])
        assert "weights_only" not in proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "runs").exists()
