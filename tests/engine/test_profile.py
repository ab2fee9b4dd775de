"""train.profile: every bad node is refused with its dotted key; a window writes the trace."""
from __future__ import annotations

import json

import pytest
import torch

from tubelet.engine.profile import StepProfiler, check_profile
from tubelet.registry import ConfigError


@pytest.mark.parametrize("node, key", [
    (3, "train.profile:"), ({"start": 1, "step": 2}, "train.profile.step: unknown key; did you "
                                                     "mean 'steps'?"),
    ({"start": -1, "steps": 2}, "train.profile.start:"), ({"start": 0, "steps": 0}, "train.profile.steps:"),
    ({"start": 1.5, "steps": 2}, "train.profile.start:"), ({"start": True, "steps": 2}, "train.profile.start:"),
    ({"steps": 2}, "train.profile.start:"), ({"start": 9, "steps": 2}, "past the run's 10 steps"),
])
def test_bad_profile_nodes(node, key):
    with pytest.raises(ConfigError, match=key.replace("?", r"\?")):
        check_profile(node, total_steps=10)


def test_window_writes_trace_and_table(tmp_path):
    assert check_profile(None, total_steps=10) is None
    start, steps = check_profile({"start": 1, "steps": 2}, total_steps=10)
    prof = StepProfiler(start=start, steps=steps, run_dir=tmp_path, device=torch.device("cpu"),
                        rank=1, world_size=2)
    x = torch.ones(8, 8)
    written = []
    for step in range(5):  # before step 1, after steps 1..4
        written.append(prof.at_step(step))
        x = x @ x / 8  # one step's work
    assert written == [False, False, False, True, False]
    trace = json.loads((tmp_path / "profile_trace_rank1.json").read_text())
    assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])
    table = (tmp_path / "profile_ops_rank1.txt").read_text()
    assert "optimizer steps 2-3" in table and "aten::mm" in table
