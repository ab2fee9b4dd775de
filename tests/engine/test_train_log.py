"""Train rows taken at each log interval and written in bursts (engine/train_log.py): the
same rows to the bit as writing each at once, in order, and none lost however a run ends."""
import json
import math

import pytest
import torch

from conftest import DEBUG_RECIPE, losses_and_metrics
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.engine import train_log
from tubelet.engine.guard import NonFiniteError
from tubelet.engine.meters import Meters
from tubelet.engine.train_log import TrainLog


class Sink:
    """A RunLogger's two calls, recorded."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.shown: list[tuple[int, bool]] = []

    def log(self, metrics, *, step, epoch):
        self.rows.append({"step": step, "epoch": epoch, **metrics})

    def progress(self, *, step, epoch, fields, epochs=None, superseded=False):
        self.shown.append((step, superseded))


def _windows(n: int):
    """`n` log intervals of 3 losses each, as Meters hands them over, and their read() rows."""
    meters = Meters(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    windows = []
    for _ in range(n):
        for _ in range(3):
            meters.add_loss(torch.rand((), generator=g) * 10 ** torch.randint(-6, 6, (), generator=g))
        windows.append(meters.snapshot())
    return windows


def test_a_burst_writes_the_same_rows_in_order_and_shows_only_the_newest(monkeypatch):
    monkeypatch.setattr(train_log, "FLUSH_S", math.inf)
    at_once, burst = Sink(), Sink()
    for sink, flush_s in ((at_once, 0.0), (burst, math.inf)):
        monkeypatch.setattr(train_log, "FLUSH_S", flush_s)
        log = TrainLog(num_workers=0, world_size=1)
        for i, window in enumerate(_windows(5), 1):
            log.add(window, logger=sink, step=10 * i, epoch=0, epochs=1, progress=i / 5, lr=0.1)
            if sink is burst and i > 1:  # the first row is written at once, the rest held
                assert len(sink.rows) == 1
        log.flush(sink)
    assert [r["step"] for r in burst.rows] == [10, 20, 30, 40, 50]
    assert json.dumps(burst.rows) == json.dumps(at_once.rows)  # to the bit, and key order
    assert at_once.shown == [(s, False) for s in (10, 20, 30, 40, 50)]
    # the bar skips the rows a newer one follows at once; a plain log prints each
    assert burst.shown == [(10, False), (20, True), (30, True), (40, True), (50, False)]


def trainer_for(tmp_path, root, *overrides):
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={root}", f"run.dir={tmp_path / 'run'}",
                                     "train.progress=false", "train.log_interval=1", *overrides])
    return build_trainer(cfg)


def test_held_rows_are_written_before_each_checkpoint_and_equal_rows_written_at_once(
        tmp_path, tiny_data_root, monkeypatch):
    """A run whose rows are all held until a checkpoint or an eval writes metrics.jsonl as a
    run writing every row at once does; each checkpoint's commit finds its rows on disk."""
    runs = {}
    for name, flush_s in (("at_once", 0.0), ("held", math.inf)):
        monkeypatch.setattr(train_log, "FLUSH_S", flush_s)
        t = trainer_for(tmp_path / name, tiny_data_root, "train.checkpoint_interval=4")
        seen = []
        sync = t.logger.sync
        t._writer.before_write = lambda: (sync(), seen.append(
            max(json.loads(line)["step"] for line in (t.run_dir / "metrics.jsonl").open())))
        t.fit()
        runs[name] = (losses_and_metrics(t.run_dir), seen)
    rows, seen = runs["held"]
    assert rows == runs["at_once"][0]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, t.total_steps + 1))
    # every checkpoint (each 4 steps, each epoch's end) found the rows up to its step on disk
    every = t.steps_per_epoch
    assert seen == [s for s in range(1, t.total_steps + 1) if s % 4 == 0 or s % every == 0]
    assert seen == runs["at_once"][1] and len(seen) > t.epochs


def test_rows_held_when_the_guard_stops_the_run_are_written(tmp_path, tiny_data_root,
                                                             monkeypatch):
    monkeypatch.setattr(train_log, "FLUSH_S", math.inf)
    t = trainer_for(tmp_path, tiny_data_root, "data.val=null", "train.epochs=1",
                    "train.checkpoint_interval=0")  # no save writes the rows before the raise
    loss = t.task.loss
    t.task.loss = lambda model, batch: loss(model, batch) * (math.nan if t.step == 4 else 1.0)
    with pytest.raises(NonFiniteError, match="step 4"):
        t.fit()
    rows = [json.loads(line) for line in (t.run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
