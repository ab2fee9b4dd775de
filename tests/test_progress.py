"""The console display: the bar moves every step from host counters (an ETA from the first
steps, the epoch from the start, 1-based), loss/lr/data-wait share at log intervals, and plain
lines (no TTY) carry the ETA too."""
import logging
import time

import torch

from conftest import DEBUG_RECIPE
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.loggers import RunLogger, setup_text_log

FIELDS = {"loss": 2.0, "lr": 1e-3, "step_time": 0.2, "data_time": 0.05}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def capture() -> Lines:
    handler = Lines()
    logging.getLogger("tubelet").addHandler(handler)
    return handler


def test_plain_lines_number_epochs_from_1_and_carry_the_eta(tmp_path):
    setup_text_log(None)
    lines = capture()
    logger = RunLogger(tmp_path, tensorboard=False, progress=False)
    logger.start(total_steps=100, step=40)  # a resumed run: the ETA uses this process's steps
    time.sleep(0.05)
    logger.progress(step=50, epoch=0, fields=FIELDS, epochs=5)
    logger.close()
    line = lines.lines[-1]
    assert line.startswith("epoch 1/5 step 50/100 loss=2.0000 lr=1.000e-03"), line
    assert "(data 25%)" in line
    eta = line.rsplit("eta ", 1)[1]
    h, m, s = map(int, eta.split(":"))  # 50 steps left at >= 5 ms per step: >= 0.25 s
    assert 0 <= h * 3600 + m * 60 + s < 60, eta


def test_the_bar_moves_every_step_with_an_eta_from_the_first_steps(tmp_path):
    setup_text_log(None)
    logger = RunLogger(tmp_path, tensorboard=False, progress=True)
    logger.start(total_steps=600, step=0)
    task = logger._progress._bar.tasks[0]
    logger.advance(step=0, epoch=0, epochs=15)
    assert task.fields["epoch"] == "1/15" and task.time_remaining is None  # shown from the start
    for step in (1, 2, 3):
        time.sleep(0.11)  # the bar moves at most every 0.1 s (RunLogger.advance)
        logger.advance(step=step, epoch=0, epochs=15)
    assert task.completed == 3 and task.time_remaining is not None  # after 3 of 600 steps
    logger.advance(step=4, epoch=0, epochs=15)  # within 0.1 s of the last move: not drawn
    assert task.completed == 3
    logger.progress(step=3, epoch=0, fields=FIELDS, epochs=15)
    assert task.fields["text"] == "loss 2 lr 1.00e-03 data 25% 0.2 s/step"
    logger.advance(step=41, epoch=1, epochs=15)
    assert task.fields["epoch"] == "2/15"
    logger.close()


def test_fit_advances_the_bar_on_every_step_between_log_lines(tmp_path, tiny_data_root):
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={tiny_data_root}",
                                     f"run.dir={tmp_path / 'run'}", "train.progress=true",
                                     "train.log_interval=1000", "train.epochs=2"])
    trainer = build_trainer(cfg)
    seen = []
    advance = trainer.logger.advance

    def recording(*, step, epoch, epochs):
        assert all(isinstance(v, int) for v in (step, epoch, epochs))  # host counters only
        seen.append((step, epoch))
        advance(step=step, epoch=epoch, epochs=epochs)

    trainer.logger.advance = recording
    before = torch.get_num_threads()
    try:
        trainer.fit()
    finally:
        torch.set_num_threads(before)
    steps = trainer.total_steps
    assert seen == [(0, 0)] + [(s, (s - 1) * 2 // steps) for s in range(1, steps + 1)]
    assert trainer.logger._progress._bar.tasks[0].completed == steps
    lines = (tmp_path / "run" / "log.txt").read_text()
    assert "eval epoch 2/2 step 12:" in lines and "eval epoch 1/2 step 6:" in lines


def test_the_bar_text_changes_at_most_twice_a_second_and_ends_on_the_last_figures(tmp_path):
    """rich redraws at 2 Hz: a text newer than that is held, and drawn at the latest at close."""
    setup_text_log(None)
    logger = RunLogger(tmp_path, tensorboard=False, progress=True)
    logger.start(total_steps=100, step=0)
    task = logger._progress._bar.tasks[0]
    logger.progress(step=10, epoch=0, fields=FIELDS, epochs=1)
    logger.progress(step=20, epoch=0, fields={**FIELDS, "loss": 1.5}, epochs=1)
    assert task.fields["text"].startswith("loss 2 ")  # the second within 0.5 s: held
    logger.progress(step=30, epoch=0, fields={**FIELDS, "loss": 1.25}, epochs=1)
    logger.close()
    assert task.fields["text"].startswith("loss 1.25 ") and task.completed == 30
