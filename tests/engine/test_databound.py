"""The data-bound warning: once, over a window of steps, never on the start-up interval."""
from __future__ import annotations

import logging

from tubelet.engine.databound import DataBoundCheck


def _feed(check: DataBoundCheck, shares: list[float], *, every: int = 5) -> list[int]:
    """Log intervals of `every` steps at 0.1 s/step, each with its data share; the steps at
    which it warned."""
    warned = []
    for i, share in enumerate(shares, 1):
        if check.update(step=i * every, num_steps=every, data_time=0.1 * share, step_time=0.1):
            warned.append(i * every)
    return warned


def test_warns_once_when_the_window_is_data_bound(caplog):
    check = DataBoundCheck(num_workers=1, window=20)
    with caplog.at_level(logging.WARNING, logger="tubelet"):
        # start-up interval ignored; 20 steps at 10%; then 20 steps averaging 40%; then more
        assert _feed(check, [0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7, 0.5, 0.3, 0.9, 0.9, 0.9]) == [45]
    lines = [r.getMessage() for r in caplog.records if "data-bound" in r.getMessage()]
    assert len(lines) == 1
    assert "steps 26-45" in lines[0] and "40%" in lines[0] and "num_workers (now 1" in lines[0]


def test_quiet_at_or_below_the_threshold_and_on_short_runs():
    assert _feed(DataBoundCheck(num_workers=4, window=20), [0.9] + [0.3] * 40) == []
    # only the start-up interval and less than one window were data-bound
    assert _feed(DataBoundCheck(num_workers=4, window=20), [0.99, 0.99, 0.99, 0.99]) == []
