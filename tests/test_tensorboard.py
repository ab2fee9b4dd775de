"""TensorBoard's event files: every logged row, in order, one event per row; a resumed run
purges what the killed one wrote after its checkpoint's step, and keeps that step's rows."""
from __future__ import annotations

from tubelet.loggers import RunLogger


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def log_rows(run_dir, steps, *, start: int = 0, scale: float = 1.0, repair: bool = True) -> None:
    logger = RunLogger(run_dir, tensorboard=True, progress=False)
    logger.start(total_steps=max(steps) + 1, step=start, repair=repair)
    for step in steps:
        logger.log({"train/loss": step / 8 * scale, "train/lr": 0.5 ** (step % 7)}, step=step, epoch=0)
    logger.close()


def test_every_row_arrives_in_order_as_one_event_each(tmp_path):
    log_rows(tmp_path, range(1, 601))
    got = read_scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(s, s / 8) for s in range(1, 601)]
    assert got["train/lr"] == [(s, 0.5 ** (s % 7)) for s in range(1, 601)]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    [events_file] = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    with_values = [e for e in EventFileLoader(str(events_file)).Load() if e.summary.value]
    assert len(with_values) == 600 and all(len(e.summary.value) == 2 for e in with_values)


def test_a_resume_purges_the_rows_past_its_checkpoint(tmp_path):
    log_rows(tmp_path, range(1, 51))
    # resumed from the checkpoint at step 30: the killed run's rows 31-50 go, its row 30 stays
    log_rows(tmp_path, range(31, 61), start=30, scale=2.0)
    got = read_scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(s, s / 8) for s in range(1, 31)] + [(s, s / 4) for s in range(31, 61)]


def test_a_restart_before_any_checkpoint_drops_what_the_killed_run_wrote(tmp_path):
    log_rows(tmp_path, range(1, 21))  # killed before its first checkpoint: starts over at 0
    log_rows(tmp_path, range(1, 31), start=0, scale=2.0)
    got = read_scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(s, s / 4) for s in range(1, 31)]


def test_appending_to_a_finished_run_keeps_every_row(tmp_path):
    log_rows(tmp_path, range(1, 21))  # `tubelet test` adds its row at the last step, repair off
    log_rows(tmp_path, [20], start=20, scale=2.0, repair=False)
    got = read_scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(s, s / 8) for s in range(1, 21)] + [(20, 5.0)]
