"""Exact resume: a run killed with SIGKILL at a random step and restarted with resume=auto ends
bit-identical to an uninterrupted run. Real processes, real signals, real checkpoints."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from conftest import (DEBUG_RECIPE, assert_states_equal, kill_at_step, losses_and_metrics,
                      run_tubelet, tubelet_cmd, tubelet_here)
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


# ------------------------------------------------------------------ damaged run dirs
def killed_run(tmp_path: Path, root: Path, seed: int, *, min_step: int = 4) -> Path:
    """A run SIGKILLed at a random step >= min_step (so keep_last=3 step files exist)."""
    rng = random.Random(seed)
    cmd = tubelet_cmd(*args(root, "run"))
    kill_at_step(cmd, tmp_path / "run" / "checkpoints", rng.randint(min_step, STEPS - 5),
                 cwd=tmp_path, rng=rng)
    return tmp_path / "run" / "checkpoints"


def member_offset(path: Path, suffix: str) -> int:
    """Where the bytes of the zip member ending in `suffix` start in a torch checkpoint."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def flip_bit_in_place(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def test_bit_flips_and_a_torn_metrics_line_are_named_fallen_back_from_and_end_exact(
        tmp_path, tiny_data_root, reference, reference_dir):
    ckpts = killed_run(tmp_path, tiny_data_root, seed=7)
    newest, second, third = list_checkpoints(ckpts)[:3]
    flip_bit_in_place(newest, member_offset(newest, "data/0"))  # a tensor (last.pt: same file)
    flip_bit_in_place(second, member_offset(second, "data.pkl"))  # the pickle
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "epoch": 0.5, "train/lo')  # torn, as by a kill mid-write
    proc = run_tubelet(*args(tiny_data_root, "run"), cwd=tmp_path)
    for bad in (newest, second):
        assert f"{bad.name} does not load (checksum mismatch" in proc.stderr
        assert (ckpts / "corrupt" / bad.name).is_file()
    assert f"resumed from run/checkpoints/{third.name}" in proc.stderr
    assert "dropped 1 line(s) that are not complete metrics rows" in proc.stderr
    assert_states_equal(load_checkpoint(ckpts / "last.pt"), reference)
    assert losses_and_metrics(tmp_path / "run") == losses_and_metrics(reference_dir)


def test_torn_step_files_resume_from_last_pt_and_none_loadable_is_exit_2(
        tmp_path, tiny_data_root, reference, reference_dir, capsys):
    ckpts = killed_run(tmp_path, tiny_data_root, seed=8)
    last = (ckpts / "last.pt").read_bytes()
    steps = list_checkpoints(ckpts)
    for p in steps:  # new inodes, as an interrupted copy leaves them
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data[:len(data) // 2])
    (ckpts / "last.pt").write_bytes(last[:100])  # and last.pt too: nothing loads
    # the refusal through the CLI's main() in this process (a torch import fewer); the
    # resume after it is a real process
    proc = tubelet_here(*args(tiny_data_root, "run"), cwd=tmp_path, capsys=capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: resume: none of the {len(steps) + 1} checkpoints")  # + last.pt
    assert all(f"{p.name}: checksum mismatch" in error for p in steps)
    assert not (ckpts / "corrupt").exists()  # nothing moved when nothing loads
    (ckpts / "last.pt").write_bytes(last)  # last.pt intact again (the step files still torn)
    proc = run_tubelet(*args(tiny_data_root, "run"), cwd=tmp_path)
    assert "resumed from run/checkpoints/last.pt" in proc.stderr
    assert_states_equal(load_checkpoint(ckpts / "last.pt"), reference)
    assert losses_and_metrics(tmp_path / "run") == losses_and_metrics(reference_dir)


def test_disk_full_is_one_line_leaves_no_temp_and_resumes_exact(tmp_path, tiny_data_root,
                                                                reference, reference_dir):
    import re
    import shutil
    import subprocess
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a 30 MB tmpfs here: {mount.stderr.strip()}")
    try:
        size = (reference_dir / "checkpoints" / "last.pt").stat().st_size
        filler = mnt / "filler"
        # room for the small files and about two checkpoints: a later one fills the disk
        filler.write_bytes(b"\0" * (shutil.disk_usage(mnt).free - int(2.5 * size) - 256 * 1024))
        run = mnt / "run"
        proc = run_tubelet(*args(tiny_data_root, str(run)), cwd=tmp_path, check=False)
        assert proc.returncode == 2, proc.stderr
        error = proc.stderr.strip().splitlines()[-1]
        print(error)
        assert re.fullmatch(rf"error: no space left on device writing {run}/checkpoints/"
                            r"step_\d{8}\.pt \(needs ~[\d.]+ MB, [\d.]+ MB free\)", error), error
        assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
        kept = list_checkpoints(run / "checkpoints")
        assert kept and all(load_checkpoint(p) for p in kept)  # the earlier ones verify
        filler.unlink()
        proc = run_tubelet(*args(tiny_data_root, str(run)), cwd=tmp_path)
        assert f"resumed from {run}/checkpoints/" in proc.stderr
        assert_states_equal(load_checkpoint(run / "checkpoints" / "last.pt"), reference)
        assert losses_and_metrics(run) == losses_and_metrics(reference_dir)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("write", ["sync", "async"])
def test_sigkill_during_a_checkpoint_write_then_resume_is_bit_exact(tmp_path, tiny_data_root,
                                                                     reference, reference_dir,
                                                                     write):
    """Killed while a temp file of a checkpoint is open (data, digest or last.pt link), by
    the loop itself or (async) by the background writer while the loop trains on;
    benchmarks/kill_resume.py does this at 20 moments."""
    import os
    import signal
    import subprocess
    import time
    ckpts = tmp_path / "run" / "checkpoints"
    extra = ["train.async_checkpoint=true"] if write == "async" else []
    proc = subprocess.Popen(tubelet_cmd(*args(tiny_data_root, "run", *extra)), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(int(p.stem[5:]) >= 5 for p in list_checkpoints(ckpts)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        while not any(e.name.endswith(".tmp") for e in os.scandir(ckpts)):
            assert proc.poll() is None and time.monotonic() < deadline
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed_at = load_checkpoint(ckpts / "last.pt")["trainer"]["step"]
    proc = run_tubelet(*args(tiny_data_root, "run", *extra), cwd=tmp_path)
    # killed between a step file and its last.pt link, it resumes from the newer step file
    resumed = re.search(r"resumed from \S+ at epoch \d+ step (\d+)", proc.stderr)
    assert resumed and int(resumed.group(1)) >= killed_at >= 5
    assert not [p for p in ckpts.iterdir() if p.name.endswith(".tmp")]  # the next run cleaned up
    assert_states_equal(load_checkpoint(ckpts / "last.pt"), reference)
    assert losses_and_metrics(tmp_path / "run") == losses_and_metrics(reference_dir)
