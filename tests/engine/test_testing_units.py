"""The test stage's pieces on tiny tensors: per-video results of the multi-view metric, the
files written from them, the confusion picture with and without matplotlib, and the recipe keys."""
from __future__ import annotations

import csv
import json
import logging
import sys

import numpy as np
import pytest
import torch

from tubelet.config import load_config
from tubelet.engine.results import write_report
from tubelet.metrics import MultiViewAccuracy
from tubelet.plots import MAX_SHOWN, most_confused

from conftest import DEBUG_RECIPE

# the debug recipe's val node as its data.test, 2 clips x 3 crops (resolved: no interpolation)
_VAL = load_config(DEBUG_RECIPE)["data"]["val"]
TEST_NODE = "data.test=" + json.dumps({**_VAL, "temporal_views": 2, "spatial_crops": 3})


def _metric(num_classes: int, num_videos: int, views: int, seed: int = 0) -> MultiViewAccuracy:
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(num_videos).repeat_interleave(views)
    labels = torch.randint(0, num_classes, (num_videos,), generator=g)[ids]
    m = MultiViewAccuracy(num_classes)
    m.update(torch.randn(len(ids), num_classes, generator=g), labels, ids)
    return m


@pytest.mark.parametrize("num_classes", [3, 7, 12])
def test_video_results_agree_with_the_metrics_they_explain(num_classes):
    m = _metric(num_classes, num_videos=40, views=6)
    r, metrics = m.video_results(), m.compute()
    assert r["id"].tolist() == list(range(40))
    assert (r["pred"] == r["label"]).float().mean() == metrics["acc1"]
    seen = r["support"] > 0
    assert r["per_class_acc"][seen].mean() == metrics["mean_class_acc"]
    assert r["support"].sum() == 40 and r["confusion"].sum() == 40
    assert torch.equal(r["confusion"].sum(dim=1), r["support"])  # rows: the true class
    hits = (r["per_class_acc"] * r["support"]).round().long()
    assert torch.equal(r["confusion"].diagonal(), hits)


def _classification_files(tmp_path, num_classes: int):
    m = _metric(num_classes, num_videos=50, views=2, seed=1)
    names = [f"class_{c:02d}" for c in range(num_classes)]
    files, image = write_report(tmp_path / "test", {"kind": "classification", **m.video_results()},
                                classes=names, path_of=lambda i: f"videos/{i}.mp4")
    return m, names, files, image


def _rate(hits: list[bool]) -> float:
    """A share as the metric computes it: a float32 mean of 0/1 (exact sum, one division)."""
    return float(np.float32(sum(hits)) / np.float32(len(hits)))


def test_classification_files_reproduce_the_metrics(tmp_path):
    m, names, files, image = _classification_files(tmp_path, 6)
    text = (tmp_path / "test/predictions.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["id"] for r in rows] == list(range(50))  # each video once
    assert rows[3]["path"] == "videos/3.mp4" and len(rows[3]["top"]) == 5
    metrics = m.compute()
    assert _rate([r["top"][0] == r["label"] for r in rows]) == float(metrics["acc1"])
    assert _rate([r["label"] in r["top"][:5] for r in rows]) == float(metrics["acc5"])
    table = list(csv.DictReader(open(tmp_path / "test/per_class.csv")))
    assert [t["class"] for t in table] == names
    assert sum(int(t["support"]) for t in table) == 50
    confusion = list(csv.reader(open(tmp_path / "test/confusion_matrix.csv")))
    assert confusion[0][1:] == names and [row[0] for row in confusion[1:]] == names
    assert sum(int(x) for row in confusion[1:] for x in row[1:]) == 50
    assert files["confusion_png"] == "test/confusion_matrix.png"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (tmp_path / "test/confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_large_label_set_shows_the_most_confused_classes():
    confusion = np.diag(np.full(40, 5))
    confusion[7, 30] = confusion[30, 7] = 4
    confusion[12, 3] = 9
    chosen = most_confused(confusion, MAX_SHOWN)
    assert len(chosen) == MAX_SHOWN and {3, 7, 12, 30} <= set(chosen.tolist())
    assert chosen.tolist() == sorted(chosen.tolist())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_without_matplotlib_the_png_is_skipped_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails
    logger, records = logging.getLogger("tubelet"), _Records()
    # whatever earlier tests set; setLevel (not a plain attribute) also clears the logger's
    # isEnabledFor cache, which otherwise still drops INFO after a WARNING level was seen
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    try:
        _, _, files, image = _classification_files(tmp_path, 4)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert image is None and "confusion_png" not in files
    assert not (tmp_path / "test/confusion_matrix.png").exists()
    assert (tmp_path / "test/confusion_matrix.csv").is_file()
    lines = [r.getMessage() for r in records.records if "matplotlib" in r.getMessage()]
    assert len(lines) == 1 and "tubelet[plot]" in lines[0], lines


def test_regression_writes_each_sample_with_its_error(tmp_path):
    from tubelet.tasks.regression import GazeTask

    class Model(torch.nn.Module):
        def forward(self, x):
            return x[:, :3]

    task = GazeTask(input_key="x")
    target = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    task.eval_step(Model(), {"x": target + 0.1, "target": target, "index": torch.arange(5)})
    files, image = write_report(tmp_path / "test", task.test_results(), classes=None,
                                path_of=lambda i: None)
    rows = [json.loads(x) for x in (tmp_path / "test/predictions.jsonl").read_text().splitlines()]
    assert image is None and files == {"predictions": "test/predictions.jsonl"}
    assert [r["id"] for r in rows] == list(range(5))
    mean = np.mean([r["angular_error_deg"] for r in rows])
    assert mean == pytest.approx(task.compute_metrics()["angular_error"], rel=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["train.test_checkpoint=bset"],
     "train.test_checkpoint: unknown 'bset'; choose one of ['last', 'best']; did you mean 'best'?"),
    (["train.test_chekpoint=best"],
     "train.test_chekpoint: unknown key; did you mean 'test_checkpoint'?"),
    (["data.tset={type: synthetic_actions}"], "data.tset: unknown key; did you mean 'test'?"),
    (["data.test={type: synthetic_action}"], "data.test.type: unknown dataset 'synthetic_action'"),
    ([TEST_NODE, "data.test.temporal_views=0"], "data.test.temporal_views: must be >= 1, got 0"),
    ([TEST_NODE, "data.test.num_frames=6"],
     "data.test.num_frames: clips of 6 frames, but model.num_frames is 4"),
    ([TEST_NODE, "data.val=null", "train.test_checkpoint=best"],
     "train.test_checkpoint: 'best' is chosen on data.val, which this recipe lacks"),
])
def test_test_keys_are_validated_like_every_other(overrides, message, capsys):
    from tubelet.cli import main
    assert main(["config", str(DEBUG_RECIPE), *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
