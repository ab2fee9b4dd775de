import logging
import random

import numpy as np
import pytest
import torch

from tubelet.engine.checkpoint import (find_resumable, list_checkpoints, load_checkpoint,
                                       rng_state, save_checkpoint, set_rng_state)


def state(v: float) -> dict:
    return {"model": {"w": torch.full((3,), v)}, "trainer": {"step": int(v)}}


def test_keep_last_links_and_no_temp_files(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=2, is_best=step == 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000003.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["trainer"]["step"] == 4
    # best survives the deletion of its step file: it is its own link to the data
    assert load_checkpoint(tmp_path / "best.pt")["trainer"]["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_newest_falls_back_to_previous_with_a_warning(tmp_path, caplog):
    for step in (10, 20):
        save_checkpoint(state(step), tmp_path, step=step, keep_last=3)
    newest = tmp_path / "step_00000020.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a crash mid-copy
    with caplog.at_level(logging.WARNING, logger="tubelet"):
        path, loaded = find_resumable(tmp_path)
    assert path.name == "step_00000010.pt" and loaded["trainer"]["step"] == 10
    assert "step_00000020.pt does not load" in caplog.text


class NotAllowed:
    pass


def test_loading_is_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": NotAllowed()}, path)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        load_checkpoint(path)
    assert find_resumable(tmp_path) is None  # not a step file: never picked up


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint({"rng": rng_state()}, tmp_path, step=0)
    expected = (random.random(), np.random.randn(), torch.rand(2))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    got = (random.random(), np.random.randn(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
