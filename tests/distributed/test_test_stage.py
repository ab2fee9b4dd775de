"""The final test end to end, through the real CLI: the debug recipe with a data.test of 2 clips
x 3 crops. One uninterrupted run (A) and one trained without data.test (B: what a run killed
after its last checkpoint but before the test leaves) are made once; B then resumes on 2 ranks
(torchrun, gloo) with data.test, and must test exactly what A tested."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DEBUG_RECIPE, losses_and_metrics
from tubelet.config import load_config
from .conftest import cli_cmd, run, torchrun_cmd

pytestmark = pytest.mark.slow
_VAL = load_config(DEBUG_RECIPE)["data"]["val"]
TEST = object()  # stands for the data.test override in `_args`
FILES = ("test/predictions.jsonl", "test/per_class.csv", "test/confusion_matrix.csv",
         "test/confusion_matrix.png")


def _args(root, run_dir, *extra):
    test = {**_VAL, "root": str(root), "temporal_views": 2, "spatial_crops": 3}
    extra = [f"data.test={json.dumps(test)}" if x is TEST else x for x in extra]
    return [str(DEBUG_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}", "train.epochs=1",
            *extra]


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_root):
    cwd = tmp_path_factory.mktemp("test_stage")
    run(cli_cmd("train", *_args(tiny_data_root, "A", TEST)), cwd=cwd, timeout=300)
    run(cli_cmd("train", *_args(tiny_data_root, "B")), cwd=cwd, timeout=300)
    return cwd, tiny_data_root


def test_the_final_test_writes_what_a_researcher_analyses(runs):
    cwd, _ = runs
    a = cwd / "A"
    rows = _rows(a)
    test_rows = [r for r in rows if "test/acc1" in r]
    assert len(test_rows) == 1 and test_rows[0]["step"] == rows[-2]["step"] == 6
    results = json.loads((a / "test_results.json").read_text())
    assert results["metrics"] == {k: v for k, v in test_rows[0].items() if k.startswith("test/")}
    assert results["checkpoint"] == "checkpoints/last.pt" and results["num_videos"] == 12
    assert [c["support"] for c in results["per_class"]] == [3, 3, 3, 3]
    preds = [json.loads(x) for x in (a / "test/predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == list(range(12))  # every video once
    hits = sum(p["top"][0] == p["label"] for p in preds)  # the metric's float32 share
    assert float(np.float32(hits) / np.float32(len(preds))) == results["metrics"]["test/acc1"]
    assert (a / "test/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # the test only adds rows: training and validation are bit-identical without it
    assert losses_and_metrics(cwd / "B") == [r for r in losses_and_metrics(a)
                                             if "test/acc1" not in r]


def test_a_run_killed_before_its_test_tests_on_resume_on_any_ranks_and_only_once(runs):
    cwd, root = runs
    a, b = cwd / "A", cwd / "B"
    assert not (b / "test_results.json").exists()
    proc = run(torchrun_cmd("train", *_args(root, "B", TEST, "data.batch_size=2")), cwd=cwd,
               timeout=300)
    assert "resumed from" in proc.stderr
    for name in FILES:  # 2 ranks from the resume = 1 rank uninterrupted, byte for byte
        assert (b / name).read_bytes() == (a / name).read_bytes(), name
    ra, rb = (json.loads((d / "test_results.json").read_text()) for d in (a, b))
    assert {**ra, "checkpoint_sha256": None} == {**rb, "checkpoint_sha256": None}
    assert losses_and_metrics(b) == losses_and_metrics(a)
    before = (a / "metrics.jsonl").read_bytes()
    proc = run(cli_cmd("train", *_args(root, "A", TEST)), cwd=cwd, timeout=300)  # a finished run
    assert "tested already" in proc.stderr and "test (" not in proc.stderr
    assert (a / "metrics.jsonl").read_bytes() == before


def test_tubelet_test_scores_a_checkpoint_into_the_run_dir(runs):
    cwd, root = runs
    a = cwd / "A"
    preds = (a / "test/predictions.jsonl").read_bytes()
    proc = run(cli_cmd("test", *_args(root, "A", TEST, "train.test_checkpoint=best")),
               cwd=cwd, timeout=300)
    results = json.loads((a / "test_results.json").read_text())
    assert json.loads(proc.stdout) == results["metrics"]
    assert results["checkpoint"] == "checkpoints/best.pt"  # best = last after one epoch
    assert (a / "test/predictions.jsonl").read_bytes() == preds
    test_rows = [r for r in _rows(a) if "test/acc1" in r]
    assert len(test_rows) == 2  # appended, nothing dropped
    assert test_rows[-1]["test/acc1"] == results["metrics"]["test/acc1"]
