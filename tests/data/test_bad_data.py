"""Bad data end to end, through the real CLI entry point (in-process, to keep the suite fast):
with 5% of the synthetic set corrupted (truncated, zero-byte, deleted) training completes, the
bad count is exact, and the substitutes are identical across two runs (one with 2 loader
workers and `device_transforms`, one with neither); with 20% corrupted the run exits 2 and
prints the list. Files that open but fail to decode in a worker:
tests/data/test_composed_and_batches.py."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import DEBUG_RECIPE
from tubelet.cli import main
from tubelet.data.synth import write_synthetic_dataset

pytestmark = pytest.mark.slow
PER_CLASS = 15  # 4 classes x 15 = 60 train videos; 3 bad = 5%


def corrupt(root: Path, names: list[str]) -> list[Path]:
    paths = [next(root.glob(f"videos/*/{name}")) for name in names]
    kinds = [lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),  # truncated
             lambda p: p.write_bytes(b""), os.remove]
    for k, path in enumerate(paths):
        kinds[k % len(kinds)](path)
    return paths


@pytest.fixture(autouse=True)
def restore_logging():
    """The in-process CLI points the tubelet logger at this test's captured stderr; undo it so
    later tests do not log into a closed stream."""
    yield
    log = logging.getLogger("tubelet")
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.propagate = True


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "clean"
    write_synthetic_dataset(root, num_classes=4, num_train_per_class=PER_CLASS,
                            num_test_per_class=3, num_frames=8, size=24)
    return root


def train(root: Path, run_dir: Path, *extra: str) -> int:
    # threads pinned: runs with different num_workers are compared bit for bit, and
    # `threads: auto` would give each worker count its own thread count (float rounding)
    return main(["train", str(DEBUG_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}",
                 f"data.train.num_train_per_class={PER_CLASS}", "train.epochs=1",
                 "train.checkpoint_interval=0", "train.threads=1", *extra])


def test_five_percent_bad_completes_with_exact_count_and_same_substitutes(clean_root, tmp_path):
    root = shutil.copytree(clean_root, tmp_path / "data")
    # Train names c<k>_v<nnnn> with nnnn < 15; one of each kind.
    bad = corrupt(root, ["c0_v0003.mp4", "c1_v0007.mp4", "c2_v0011.mp4"])
    # Run a also splits the pipeline: the crop in 2 workers, normalize on the (CPU) device.
    norm = "{type: normalize, mean: [0.45, 0.45, 0.45], std: [0.225, 0.225, 0.225]}"
    assert train(root, tmp_path / "a", "data.max_bad_fraction=0.05", "data.num_workers=2",
                 "data.train.transforms=[{type: random_crop, size: 16}]",
                 f"data.train.device_transforms=[{norm}]") == 0
    assert train(root, tmp_path / "b", "data.max_bad_fraction=0.05", "data.num_workers=0") == 0
    for run in ("a", "b"):
        lines = (tmp_path / run / "bad_files.txt").read_text().splitlines()
        assert sorted(line.split("\t")[1] for line in lines) == sorted(map(str, bad)), lines
        assert all(line.startswith("train\t") for line in lines)
    # Same substitutes whatever the workers, same clips wherever the transforms ran:
    # the runs are bit-identical.
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=False)["model"]
            for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [[{k: v for k, v in json.loads(line).items() if not k.endswith("_time")}
             for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("a", "b")]
    assert rows[0] == rows[1]


def test_twenty_percent_bad_exits_2_with_the_list(clean_root, tmp_path, capsys):
    root = shutil.copytree(clean_root, tmp_path / "data")
    names = [f"c{k}_v{i:04d}.mp4" for k in range(4) for i in range(0, 15, 5)]  # 12 of 60
    bad = corrupt(root, names)
    assert train(root, tmp_path / "c") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: data.max_bad_fraction: 12 of 60 train files (20.0%)")
    assert "bad_files.txt" in last
    assert all(str(p) in err for p in bad)  # the list is printed
    assert len((tmp_path / "c" / "bad_files.txt").read_text().splitlines()) == 12


def test_data_check_reports_counts_bad_files_and_speed(clean_root, tmp_path, capsys):
    root = shutil.copytree(clean_root, tmp_path / "data")
    bad = corrupt(root, ["c0_v0003.mp4", "c1_v0007.mp4"])  # truncated, zero-byte
    code = main(["data", "check", str(DEBUG_RECIPE), f"data.train.root={root}",
                 f"data.train.num_train_per_class={PER_CLASS}", "--items", "4"])
    out, err = capsys.readouterr()
    assert code == 2, err[-2000:]
    assert "move_left_fast" in out and "items/s" in out
    assert all(str(p) in out for p in bad)
    assert err.strip().endswith("data: 2 missing or corrupt files (listed above)")
