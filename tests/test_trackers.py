"""W&B (offline) and MLflow (file store) beside metrics.jsonl: one tiny run, SIGKILLed after a
checkpoint and resumed, shared by the end-to-end tests; the recipe checks in-process."""
from __future__ import annotations

import json
import logging
import os
import signal
import struct
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

from conftest import DEBUG_RECIPE, tubelet_cmd
from tubelet import cli, trackers
from tubelet.registry import ConfigError

DIST_TESTS = Path(__file__).parent / "distributed"  # dist_tasks: the test-only hook

SECRET_KEY, SECRET_URL = "sk-test-123456", "https://user:hunter2@host/x"


# ---------------------------------------------------------------------------- the recipe
@pytest.mark.parametrize("node, message", [
    ({"wandbb": None}, "trackers.wandbb: unknown tracker; did you mean 'wandb'?"),
    ({"mlflow": {"experimnt": "x"}}, "trackers.mlflow.experimnt: unknown key; did you mean "
                                     "'experiment'?"),
    ({"wandb": {"mode": "ofline"}}, "trackers.wandb.mode: unknown 'ofline'"),
    ({"wandb": {"project": 3}}, "trackers.wandb.project: expected a string, got integer 3"),
    ({"wandb": {"tags": ["a", 1]}}, "trackers.wandb.tags: expected a list of strings"),
    ({"mlflow": ["x"]}, "trackers.mlflow: expected a mapping of options"),
    (["tensorboard"], "trackers.tensorboard: unknown tracker"),
    ([3], "trackers[0]: expected a tracker name"),
    ("wandb", "trackers: expected a mapping or a list of names"),
])
def test_bad_tracker_options_are_one_line_naming_the_key(node, message):
    with pytest.raises(ConfigError) as e:
        trackers.normalize(node)
    assert str(e.value).startswith(message), str(e.value)


def test_list_and_mapping_forms_fill_the_defaults():
    assert trackers.normalize(["wandb", "mlflow"]) == trackers.normalize({"wandb": None,
                                                                          "mlflow": {}})
    got = trackers.normalize({"wandb": {"mode": "offline"}})["wandb"]
    assert got["mode"] == "offline" and got["project"] == "tubelet"


def test_a_tracker_whose_package_is_missing_names_the_extra(monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name: None if name in ("wandb", "mlflow") else real(name))
    for name in ("wandb", "mlflow"):
        with pytest.raises(ConfigError, match=rf"trackers\.{name}: the {name} package is not "
                                              rf"installed; pip install 'tubelet\[{name}\]'"):
            trackers.normalize([name])


def test_the_cli_exits_2_on_an_unknown_tracker(capsys):
    assert cli.main(["config", str(DEBUG_RECIPE), "trackers={mlfow: {}}"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: trackers.mlfow: unknown tracker; did you mean 'mlflow'?"


def test_flatten_gives_dotted_text_params():
    flat = trackers.flatten({"a": {"b": [1, {"c": None}], "d": "x", "e": {}}, "f": 1.5})
    assert flat == {"a.b.0": "1", "a.b.1.c": "null", "a.d": "x", "a.e": "{}", "f": "1.5"}


def test_a_resume_may_add_or_change_trackers():
    from tubelet.recipe_diff import recipe_changes
    refused, allowed = recipe_changes({"trackers": None}, {"trackers": {"wandb": {"mode": "offline"}}})
    assert refused == [] and allowed  # the change is said, not refused


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def tubelet_log():
    logger, handler = logging.getLogger("tubelet"), _Records()
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


class _Flaky:
    """A tracker whose network fails from the second row on."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def start(self, previous):  # noqa: ANN001, ANN201
        return {"id": "x"}

    def log(self, metrics, step):  # noqa: ANN001, ANN201
        if step >= 2:
            raise ConnectionError("network is unreachable")
        self.rows.append(step)


def test_a_tracker_failing_mid_run_warns_once_and_never_raises(tubelet_log, tmp_path):
    flaky = _Flaky()
    worker = trackers._Worker("flaky", flaky)
    worker.submit(lambda: (flaky.start(None), setattr(worker, "started", True)), start=True)
    for step in range(6):
        worker.submit(lambda s=step: flaky.log({"train/loss": 1.0}, s))  # the training thread
    worker.stop()
    worker.thread.join(10)
    assert flaky.rows == [0, 1]
    warnings = [line for line in tubelet_log if "trackers.flaky" in line]
    assert len(warnings) == 1 and "logging failed (ConnectionError: network is unreachable)" \
        in warnings[0] and "training goes on" in warnings[0]


def test_an_unreachable_tracking_server_leaves_the_tracker_off_with_one_warning(
        tubelet_log, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not retried
    options = trackers.normalize({"mlflow": {"tracking_uri": "http://u:hunter2@127.0.0.1:9"}})
    group = trackers.TrackerGroup(options, run_dir=tmp_path, run_name="r", recipe={"a": 1},
                                  resume=None)
    group.start(step=0)
    for step in range(3):
        group.log({"train/loss": 1.0}, step=step)
    group.close(timeout=60)
    warnings = [line for line in tubelet_log if "trackers.mlflow" in line]
    assert len(warnings) == 1 and "start failed, tracker off for this run" in warnings[0]
    assert "hunter2" not in warnings[0]
    assert not (tmp_path / "trackers.json").exists()


def test_a_picture_reaches_both_trackers_pixel_for_pixel(tmp_path):
    """RunLogger.log_image's path: one HxWx3 uint8 array to W&B (offline) and MLflow."""
    import numpy as np
    from PIL import Image
    image = np.zeros((8, 12, 3), np.uint8)
    image[:, :6, 0], image[2, 3] = 255, (1, 2, 3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    group = trackers.TrackerGroup(trackers.normalize({"wandb": {"mode": "offline"}, "mlflow": {}}),
                                  run_dir=run_dir, run_name="pictures", recipe={}, resume=None)
    group.start(step=0)
    group.log_image("val/confusion", image, step=3)
    group.close()
    wandb_png = list((run_dir / "wandb").glob("offline-run-*/files/media/images/val/confusion_*.png"))
    mlflow_png = list((run_dir / "mlruns").glob("*/*/artifacts/images/val~confusion+step+3+*.png"))
    assert len(wandb_png) == 1 and len(mlflow_png) == 1
    for path in wandb_png + mlflow_png:
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image), path


# ---------------------------------------------------------------------------- one tracked run
def _wandb_records(path: Path):
    """The records of a W&B transaction log (`run-<id>.wandb`): a 7-byte header, then
    LevelDB-style 32 KiB blocks of chunks (crc32c, length, type; FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf + chunk if kind == 4 else chunk)
            yield record
        buf = chunk if kind == 2 else buf + chunk if kind == 3 else b""


def wandb_view(run_dir: Path) -> tuple[set[str], dict[tuple[str, int], float], int]:
    """What W&B shows after `wandb sync` of the offline segments in order: a row whose step
    is below the run's current step is dropped (W&B never rewrites history)."""
    ids, rows, top, segments = set(), {}, -1, sorted((run_dir / "wandb").glob("offline-run-*"))
    for segment in segments:
        for record in _wandb_records(next(segment.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
            elif kind == "history" and record.history.step.num >= top:
                top = record.history.step.num
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        rows[(key, top)] = float(json.loads(item.value_json))
    return ids, rows, len(segments)


def mlflow_view(run_dir: Path) -> tuple[list, dict[tuple[str, int], float]]:
    from mlflow.tracking import MlflowClient
    with mock.patch.dict(os.environ, {"MLFLOW_ALLOW_FILE_STORE": "true"}):  # as tubelet does
        client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    rows = {}
    for run in runs:
        for key in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, key)
            assert len({m.step for m in history}) == len(history), f"{key}: a step sent twice"
            rows.update({(key, m.step): m.value for m in history})
    return runs, rows


def jsonl_view(run_dir: Path) -> dict[tuple[str, int], float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(k, r["step"]): float(v) for r in rows for k, v in r.items()
            if k not in ("step", "epoch")}


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_data_root):
    """The debug recipe with W&B offline and MLflow's file store, a secret in the environment
    and in recipe strings; SIGKILLed after its step-4 checkpoint, once both trackers started
    (the run is held at step 5 until then: W&B's start can outlast the 12 steps), then resumed
    to the end."""
    tmp = tmp_path_factory.mktemp("tracked")
    hold = tmp / "hold"
    hold.touch()
    env = {**os.environ, "WANDB_API_KEY": SECRET_KEY, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(DIST_TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = tubelet_cmd("train", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}",
                      "train.epochs=2", f"trackers={{wandb: {{mode: offline, group: '{SECRET_URL}',"
                      f" tags: [{SECRET_KEY}]}}, mlflow: null}}", "imports=[dist_tasks]",
                      f"hooks=[{{type: hold_while_file, path: '{hold}', at_step: 5}}]")
    run_dir = tmp / "runs" / "classify_tiny"
    with open(tmp / "first.err", "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 600
            while not ((run_dir / "checkpoints" / "step_00000004.pt").exists()
                       and len(json.loads((run_dir / "trackers.json").read_text()
                                          if (run_dir / "trackers.json").exists() else "{}")) == 2):
                assert proc.poll() is None, (tmp / "first.err").read_text()[-2000:]
                assert time.monotonic() < deadline, "no step-4 checkpoint in time"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)  # also when an assertion above failed
            proc.wait(timeout=30)
    hold.unlink()
    first = json.loads((run_dir / "trackers.json").read_text())
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, first, done.stderr


@pytest.mark.slow
def test_a_killed_and_resumed_run_continues_the_same_tracker_runs(tracked_run):
    run_dir, first, stderr = tracked_run
    assert "step_00000004.pt at epoch 0 step 4" in stderr  # killed while held at step 5
    assert json.loads((run_dir / "trackers.json").read_text()) == first
    lines = [line for line in stderr.splitlines() if "trackers." in line]
    assert f"trackers.wandb: continuing run {first['wandb']['id']}" in stderr, lines
    assert f"trackers.mlflow: continuing run {first['mlflow']['run_id']}" in stderr, lines
    ids, _, segments = wandb_view(run_dir)
    assert ids == {first["wandb"]["id"]} and segments == 2  # the killed one, the resumed one
    runs, _ = mlflow_view(run_dir)
    assert [r.info.run_id for r in runs] == [first["mlflow"]["run_id"]]
    assert runs[0].info.status == "FINISHED"


@pytest.mark.slow
def test_both_trackers_hold_the_metrics_of_metrics_jsonl(tracked_run):
    """Same keys and steps; same values, except wall-clock fields after the checkpoint, which
    the killed run had sent already (the trackers keep them; metrics.jsonl the resumed ones)."""
    run_dir = tracked_run[0]
    expected = jsonl_view(run_dir)
    assert {k for k, _ in expected} >= {"train/loss", "train/lr", "val/acc1"}
    for name, got in (("wandb", wandb_view(run_dir)[1]), ("mlflow", mlflow_view(run_dir)[1])):
        assert got.keys() == expected.keys(), name
        for (key, step), value in expected.items():
            if not key.endswith("_time"):
                assert got[(key, step)] == value, (name, key, step)
    params = mlflow_view(run_dir)[0][0].data.params
    assert params["model.embed_dim"] == "32" and params["train.epochs"] == "2"


@pytest.mark.slow
def test_no_secret_reaches_any_file_of_the_run(tracked_run):
    """Every file in the run dir (tracker files too; checkpoints loaded and searched) holds
    neither the secret environment value nor the URL's password."""
    run_dir = tracked_run[0]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any("mlruns" in p.parts for p in files)
    for path in files:
        texts = [path.read_bytes()]
        if path.suffix == ".pt":
            texts.append(repr(torch.load(path, weights_only=True)).encode())
        for text in texts:
            assert SECRET_KEY.encode() not in text and b"hunter2" not in text, path
    # the values were there to be redacted, and were: masked, not dropped
    config = (run_dir / "config.yaml").read_text()
    assert "https://user:***@host/x" in config and "'***'" in config
    command = " ".join(json.loads((run_dir / "env.json").read_text())["command"])
    assert "user:***@host" in command
