"""What a run tells about itself, end to end on two real runs shared by every test here: a
starved classification run (one worker, a slow decode; profiled) and an MAE pretraining run.
Checked: the data-bound warning (once), the profiler's files, summary.json, `tubelet report`
(also on a run still writing) and `tubelet visualize` with the reconstruction logged to
TensorBoard."""
from __future__ import annotations

import json
import shutil
import struct
import textwrap

import pytest
import yaml

from tests.conftest import DEBUG_RECIPE, REPO, run_tubelet

MAE_RECIPE = REPO / "configs" / "debug" / "mae_pretrain_tiny.yaml"
SLOW_PLUGIN = """
import time
from tubelet.data.datasets.synthetic import SyntheticActions
from tubelet.registry import DATASETS

@DATASETS.register("slow_synthetic_actions")
class SlowSyntheticActions(SyntheticActions):
    def __getitem__(self, key):
        time.sleep(0.06)  # a slow decode: 0.12 s per batch of 2 with one worker
        return super().__getitem__(key)
"""
pytestmark = pytest.mark.slow


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])  # width, height from IHDR


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_root):
    tmp = tmp_path_factory.mktemp("insight")
    (tmp / "slow_data.py").write_text(textwrap.dedent(SLOW_PLUGIN))
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", f"{tmp}:{REPO}")
    try:
        slow = run_tubelet("train", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}",
                           "run.dir=starved", "imports=[slow_data]",
                           "data.train.type=slow_synthetic_actions", "data.num_workers=1",
                           "data.batch_size=2", "train.epochs=2", "train.checkpoint_interval=0",
                           "train.profile={start: 2, steps: 2}", cwd=tmp, timeout=900)
        mae = run_tubelet("train", str(MAE_RECIPE), f"data.train.root={tiny_data_root}",
                          "run.dir=mae", "train.tensorboard=true", cwd=tmp, timeout=900)
    finally:
        mp.undo()
    return tmp, slow, mae


def test_starved_run_warns_once(runs):
    tmp, slow, _ = runs
    assert slow.stderr.count("data-bound:") == 1, slow.stderr[-3000:]
    line = next(x for x in slow.stderr.splitlines() if "data-bound:" in x)
    assert "num_workers (now 1" in line and "tubelet data check" in line
    assert (tmp / "starved" / "log.txt").read_text().count("data-bound:") == 1


def test_profile_and_summary_files(runs):
    tmp, _, mae = runs
    run = tmp / "starved"
    trace = json.loads((run / "profile_trace.json").read_text())
    assert any(e.get("name") == "aten::addmm" for e in trace["traceEvents"])
    assert "optimizer steps 3-4" in (run / "profile_ops.txt").read_text()
    assert not list((tmp / "mae").glob("profile_*"))  # nothing when unset
    summary = json.loads((run / "summary.json").read_text())
    assert summary["clips_per_step"] == 2 and summary["input_shape"] == [1, 3, 4, 16, 16]
    assert summary["gflops"] > 0 and summary["gmacs"] == summary["gflops"] / 2
    log_txt = (run / "log.txt").read_text()
    assert f"model: {summary['parameters']['total']:,} parameters" in log_txt
    assert json.loads((tmp / "mae" / "summary.json").read_text())["gflops"] > 0  # real tensors


def test_report_overlays_runs_and_reads_a_live_one(runs):
    tmp, _, _ = runs
    live = tmp / "live"  # a run still writing: its last line is torn
    live.mkdir()
    rows = (tmp / "starved" / "metrics.jsonl").read_text().splitlines()
    (live / "metrics.jsonl").write_text("\n".join(rows[:5]) + "\n" + rows[5][:20])
    proc = run_tubelet("report", "starved", "mae", "live", "--out", "r.png", cwd=tmp)
    lines = proc.stdout.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:5] == ["run", "steps", "best val/acc1", "best val/loss", "best val/mean_class_acc"]
    table = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines[2:5])}
    evals = [json.loads(x) for x in rows if "val/acc1" in x]
    best = max(evals, key=lambda r: r["val/acc1"])  # the first of equals, as the report picks
    assert table["starved"][2] == f"{best['val/acc1']:.4g} @{best['step']}"
    mae_loss = [json.loads(x)["val/loss"] for x in (tmp / "mae" / "metrics.jsonl").read_text()
                .splitlines() if "val/loss" in x]
    assert table["mae"][3].startswith(f"{min(mae_loss):.4g} @")  # a loss: the lowest is best
    assert table["starved"][9] != "-" and table["live"][1] == str(json.loads(rows[4])["step"])
    assert "live: skipped 1 incomplete line" in proc.stdout
    width, height = png_size(tmp / "r.png")
    assert width >= 1000 and height >= 600


def test_visualize_reconstructions(runs, tiny_data_root):
    from tubelet.registry import ConfigError
    from tubelet.visualize import visualize
    tmp, _, _ = runs
    video = sorted(tiny_data_root.rglob("*.mp4"))[0]  # a real H.264 file, through the CLI
    proc = run_tubelet("visualize", "mae", str(video), "--out", "vis", cwd=tmp)
    assert [p.name for p in (tmp / "vis").glob("*.png")] == [f"000_{video.stem}.png"], proc.stdout
    # the recipe's own clips (data.val), in this process: a subprocess costs a torch import
    pngs = visualize(tmp / "mae", [], out=tmp / "vis2", num_clips=2)
    assert [p.name for p in pngs] == ["000_val_000.png", "001_val_001.png"]
    assert all(png_size(p)[0] > 300 for p in [*pngs, *(tmp / "vis").glob("*.png")])
    # not an MAE run: the starved run's recipe, without its plugin (not importable here)
    cfg = yaml.safe_load((tmp / "starved" / "config.yaml").read_text())
    del cfg["imports"]
    cfg["data"]["train"]["type"] = "synthetic_actions"
    (tmp / "classify").mkdir()
    (tmp / "classify" / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="mae_pretrain"):
        visualize(tmp / "classify", [])


def test_mae_logs_its_reconstruction_at_each_eval(runs):
    tmp, _, _ = runs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp / "mae" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("val/reconstruction")
    evals = [json.loads(x)["step"] for x in (tmp / "mae" / "metrics.jsonl").read_text()
             .splitlines() if "val/loss" in x]
    assert [i.step for i in images] == evals and images[0].width > 0
