"""The run directory, in process and with real second processes: confinement, the lock,
metrics.jsonl repair, the recipe comparison behind resume."""
import json
import os
import subprocess
import sys
import time

import pytest

from tubelet.config import load_config
from tubelet.registry import ConfigError
from tubelet.recipe_diff import recipe_changes
from tubelet.rundir import LOCK_NAME, RunDir, check_free, repair_metrics, resolve_run_dir


def run_node(name="r", dir=None):
    return {"name": name, "dir": dir if dir is not None else f"runs/{name}"}


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/etc", "", " ", "-x", "a\\b",
                                  "x" * 300, None, ["a"], True])
def test_run_name_stays_one_plain_name_under_runs(tmp_path, name):
    with pytest.raises(ConfigError, match=r"^run\.name: "):
        resolve_run_dir({"name": name, "dir": f"runs/{name}"}, cwd=tmp_path)


@pytest.mark.parametrize("where", [".", "..", "./", "/", "sub/.."])
def test_run_dir_is_never_the_working_directory_or_above(tmp_path, where):
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError, match="is the working directory or above it"):
        resolve_run_dir(run_node(dir=where), cwd=tmp_path)


def test_run_dir_that_is_a_file_or_a_foreign_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        resolve_run_dir(run_node(dir="afile"))
    with pytest.raises(ConfigError, match="cannot be created: .*afile is a file"):
        resolve_run_dir(run_node(dir="afile/run"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="non-empty folder that is not a tubelet run"):
        resolve_run_dir(run_node(dir="home"))
    with pytest.raises(ConfigError, match="longer than 255 bytes"):
        resolve_run_dir(run_node(dir="x" * 300))
    (tmp_path / "empty").mkdir()
    assert resolve_run_dir(run_node(dir="empty")) == tmp_path.joinpath("empty").relative_to(tmp_path)
    (tmp_path / "old_run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old_run" / "notes.txt").write_text("x")
    resolve_run_dir(run_node(dir="old_run"))  # a tubelet run: may be continued


def test_read_only_run_dir_is_refused_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
    try:
        with pytest.raises(ConfigError, match="not writable"):
            resolve_run_dir(run_node(dir=str(ro)))
        with pytest.raises(ConfigError, match="cannot be created: .* is not writable"):
            resolve_run_dir(run_node(dir=str(ro / "run")))
    finally:
        subprocess.run(["umount", str(ro)], check=True)


HOLD = """
import sys, time
from pathlib import Path
from tubelet.rundir import RunDir
RunDir(Path(sys.argv[1])).open()
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder_and_a_dead_ones_lock_taken_over(
        tmp_path, caplog):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        record = json.loads((run_dir / LOCK_NAME).read_text())
        assert record["pid"] == holder.pid and record["host"] and record["started"]
        for attempt in (lambda: RunDir(run_dir).open(), lambda: check_free(run_node(dir=str(run_dir)))):
            with pytest.raises(ConfigError, match=f"is in use by pid {holder.pid} on "):
                attempt()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL: the kernel dropped the flock, the file still names the dead holder
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING", logger="tubelet"):
        run = RunDir(run_dir).open()
    assert f"taking over the lock of pid {holder.pid}" in caplog.text
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    run.finish()
    assert run_dir.exists()  # another process created it: only a dir this one made is removed


def test_a_run_that_wrote_nothing_leaves_no_dir_and_an_existing_one_gets_the_error(tmp_path):
    fresh = RunDir(tmp_path / "fresh").open()
    fresh.finish("model.depth: bad")
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "step_00000001.pt").write_bytes(b"x")
    old = RunDir(tmp_path / "old").open()
    old.commit("a: 1\n")
    old.finish("resume: refused")
    assert (tmp_path / "old" / "log.txt").read_text().strip().endswith("error: resume: refused")
    assert (tmp_path / "old" / LOCK_NAME).read_text() == ""  # a clean end empties the lock file


def test_commit_keeps_a_changed_config_and_leaves_the_same_one_untouched(tmp_path):
    run = RunDir(tmp_path / "r").open()
    run.commit("a: 1\n")
    before = (tmp_path / "r" / "config.yaml").stat().st_mtime_ns
    time.sleep(0.01)
    run.commit("a: 1\n")
    assert (tmp_path / "r" / "config.yaml").stat().st_mtime_ns == before
    run.commit("a: 2\n")
    run.commit("a: 3\n")
    assert [(tmp_path / "r" / n).read_text() for n in ("config.1.yaml", "config.2.yaml",
                                                       "config.yaml")] == ["a: 1\n", "a: 2\n", "a: 3\n"]
    run.finish()


def test_metrics_repair_drops_torn_foreign_and_later_rows(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "epoch": 0, "train/loss": 1.0} for s in (2, 4, 6)]
    good = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(good + "hello\n[1, 2]\n" + '{"step": "x"}\n' + '{"step": 8, "epo')
    with caplog.at_level("WARNING", logger="tubelet"):
        repair_metrics(path, step=4)
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows[:2])
    assert "dropped 4 line(s) that are not complete metrics rows" in caplog.text
    before = path.stat().st_mtime_ns
    repair_metrics(path, step=4)  # nothing to drop: not rewritten
    assert path.stat().st_mtime_ns == before


def test_a_metrics_file_with_no_tubelet_row_is_kept_aside_not_rewritten(tmp_path, caplog):
    """A run dir pointed at an existing folder: someone else's metrics.jsonl is moved aside
    whole, as a previous config.yaml is; a torn line of our own is still dropped."""
    path = tmp_path / "metrics.jsonl"
    theirs = '{"epoch": 1, "acc": 0.5}\nloss 0.3\n'
    (tmp_path / "metrics.1.jsonl").write_text("taken\n")
    path.write_text(theirs)
    with caplog.at_level("WARNING", logger="tubelet"):
        repair_metrics(path, step=0)
    assert not path.exists() and (tmp_path / "metrics.2.jsonl").read_text() == theirs
    assert "no line is a tubelet metrics row; kept as metrics.2.jsonl" in caplog.text
    path.write_text('{"step": 2, "epoch": 0.5, "train/loss": 1.0}\n{"step": 4, "ep')
    repair_metrics(path, step=2)  # ours, with a torn last line: repaired in place
    assert path.read_text() == '{"step": 2, "epoch": 0.5, "train/loss": 1.0}\n'


def test_recipe_changes_split_what_is_trained_from_what_extends_it():
    old = {"optimizer": {"lr": 0.001}, "train": {"epochs": 3, "log_interval": 2},
           "data": {"num_workers": 0, "train": {"transforms": [{"size": 16}]}}, "resume": "auto"}
    new = {"optimizer": {"lr": 0.002}, "train": {"epochs": 5, "log_interval": 4},
           "data": {"num_workers": 2, "train": {"transforms": [{"size": 16}, {"p": 1}]}},
           "resume": "force"}
    refused, allowed = recipe_changes(old, new)
    assert refused == ["data.train.transforms[1].p: (unset) in the run, 1 now",
                       "optimizer.lr: 0.001 in the run, 0.002 now"]
    assert allowed == ['data.num_workers: 0 in the run, 2 now', 'resume: "auto" in the run, "force" now',
                       "train.epochs: 3 in the run, 5 now", "train.log_interval: 2 in the run, 4 now"]
    assert recipe_changes(None, new) == ([], [])  # an older checkpoint without a record


def test_a_base_does_not_pass_its_run_identity_down(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "run: {name: quickstart, dir: runs/quickstart}\nmodel: {type: vit}\n"
        "task: {type: classification, num_classes: 2}\noptimizer: {type: sgd, lr: 0.1}\n")
    (tmp_path / "mine.yaml").write_text("base: base.yaml\n")
    (tmp_path / "named.yaml").write_text("base: mine.yaml\nrun: {name: other}\n")
    assert load_config(tmp_path / "mine.yaml")["run"] == {"name": "mine", "dir": "runs/mine"}
    assert load_config(tmp_path / "named.yaml")["run"] == {"name": "other", "dir": "runs/other"}
    assert load_config(tmp_path / "base.yaml")["run"]["name"] == "quickstart"
    assert load_config(tmp_path / "mine.yaml", ["run.name=x"])["run"]["dir"] == "runs/x"


def test_an_error_before_the_run_dir_opens_goes_to_an_existing_runs_log(tmp_path):
    from tubelet import rundir
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").write_text("earlier\n")
    (run / LOCK_NAME).write_text("")
    rundir.check_free(run_node(dir=str(run)))
    rundir.finish_all("model.dpeth: unknown key")
    assert (run / "log.txt").read_text().splitlines()[-1].endswith("error: model.dpeth: unknown key")
    holder = hold_lock(run)  # busy: the holder's log is left alone
    try:
        rundir.finish_all("run.dir: in use")
    finally:
        holder.kill()
        holder.wait()
    assert "in use" not in (run / "log.txt").read_text()


def test_one_process_may_open_its_own_run_dir_again(tmp_path):
    first = RunDir(tmp_path / "r").open()
    second = RunDir(tmp_path / "r").open()  # e.g. two build_trainer calls in one process
    assert second.created and json.loads((tmp_path / "r" / LOCK_NAME).read_text())["pid"] == os.getpid()
    first.finish()  # no longer held: a no-op
    assert (tmp_path / "r").exists()
    second.finish()
    assert not (tmp_path / "r").exists()


HOLD_AND_FORK = """
import os, sys, time
from pathlib import Path
from tubelet.rundir import RunDir
RunDir(Path(sys.argv[1])).open()
if os.fork() == 0:  # a DataLoader worker, say: it outlives a SIGKILLed parent for a while
    os.write(1, b"child\\n")  # fork's after-in-child hooks have run by now
    time.sleep(30)
    os._exit(0)
os.write(1, b"locked\\n")  # one write each: unbuffered print() writes the newline apart,
time.sleep(60)             # and the two lines interleaved ('lockedchild') under load
"""


def test_a_forked_child_does_not_keep_a_killed_runs_lock(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    # both have printed: on a loaded machine the child may not have run at all yet when the
    # parent prints, and until its fork hook runs it does hold the lock
    assert {holder.stdout.readline().strip() for _ in range(2)} == {"locked", "child"}
    with pytest.raises(ConfigError, match="in use by"):
        RunDir(run_dir).open()
    holder.kill()
    holder.wait()
    run = RunDir(run_dir).open()  # the child still sleeps, and the lock is free
    run.finish()
