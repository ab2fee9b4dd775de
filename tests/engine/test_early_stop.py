"""Early stopping (`train.early_stop`): the rule on a sequence of metric values, the recipe's
validation, and a real run whose metric plateaus: it stops at the expected epoch, says so, a
resume of the stopped run trains nothing, and a resume from before the decision stops at the
same epoch with the same weights."""
import json
import shutil

import pytest
import torch

from conftest import DEBUG_RECIPE, assert_states_equal
from tubelet import cli
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.engine.checkpoint import list_checkpoints
from tubelet.engine.early_stop import EarlyStopping, stops
from tubelet.registry import ConfigError


def decisions(values, **kwargs):
    es = EarlyStopping(**kwargs)
    return [es.update(v, epoch=i + 1) for i, v in enumerate(values)], es


@pytest.mark.parametrize("values,kwargs,stop_at,best", [
    ([0.5, 0.6, 0.6, 0.6, 0.6], dict(patience=2), 4, 0.6),            # a plateau after eval 2
    ([0.5, 0.6, 0.55, 0.7, 0.7, 0.7], dict(patience=2), 6, 0.7),      # a new best restarts it
    ([0.5, 0.505, 0.509], dict(patience=2, min_delta=0.01), 3, 0.5),  # too small to count
    ([0.5, 0.5], dict(patience=0), 2, 0.5),                           # 0: the first miss stops
    ([3.0, 2.0, 2.5, 2.1, 1.0], dict(patience=3, mode="min"), None, 1.0),
    ([3.0, 2.0, 2.5, 2.1, 2.0], dict(patience=3, mode="min"), 5, 2.0),
])
def test_the_rule(values, kwargs, stop_at, best):
    stopped, es = decisions(values, **kwargs)
    first = stopped.index(True) + 1 if True in stopped else None
    assert first == stop_at and es.best == best
    assert stopped[first - 1:] == [True] * (len(values) - first + 1) if first else True


def test_the_saved_state_decides_with_the_recipes_patience():
    _, es = decisions([0.5, 0.5, 0.5], patience=2)
    state = es.state_dict()
    assert stops(state, patience=2) and not stops(state, patience=3) and not stops(None, patience=0)
    longer = EarlyStopping(patience=3)
    longer.load_state_dict(state)  # a resume with more patience continues the run
    assert not longer.stopped and longer.bad_evals == 2


@pytest.mark.parametrize("kwargs", [dict(patience=-1), dict(patience=1.5), dict(patience=True),
                                    dict(patience=2, min_delta=-0.1),
                                    dict(patience=2, min_delta=float("nan"))])
def test_bad_values_are_user_errors(kwargs):
    with pytest.raises(ConfigError, match=r"train\.early_stop\.(patience|min_delta)"):
        EarlyStopping(**kwargs)


@pytest.mark.parametrize("override,message", [
    ("train.early_stop={patience: -1}", "train.early_stop.patience: must be >= 0"),
    ("train.early_stop={patience: 2.5}", "train.early_stop.patience: expected int"),
    ("train.early_stop={patience: 2, min_delta: -1}", "train.early_stop.min_delta: must be >= 0"),
    ("train.early_stop={patiense: 2}", "did you mean 'patience'"),
    ("train.early_stop={min_delta: 0.1}", "train.early_stop.patience: required key is missing"),
    ("train.early_stop=3", "train.early_stop: expected dict or null"),
])
def test_tubelet_config_refuses_a_bad_early_stop(override, message, capsys):
    assert cli.main(["config", str(DEBUG_RECIPE), "data.train.root=/nonexistent/x", override]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_early_stop_needs_data_val(capsys):
    assert cli.main(["config", str(DEBUG_RECIPE), "data.val=null",
                     "train.early_stop={patience: 1}"]) == 2
    assert "train.early_stop: needs data.val" in capsys.readouterr().err


def _fit(run_dir, data_root, *overrides):
    # lr 1e-9: the weights barely move, so val/acc1 is the same at every eval (a plateau)
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={data_root}", f"run.dir={run_dir}",
                                     "train.progress=false", "optimizer.lr=1e-9",
                                     "train.epochs=6", "train.checkpoint_interval=0",
                                     "train.keep_last=6", "train.early_stop={patience: 2}",
                                     "data.batch_size=8",  # 3 steps an epoch
                                     "resume=auto", *overrides])
    trainer = build_trainer(cfg)
    trainer.fit()
    return trainer


def test_a_plateau_stops_at_the_expected_epoch_and_resumes_exactly(tmp_path, tiny_data_root,
                                                                   monkeypatch):
    from tubelet.engine import early_stop
    said = []  # build_trainer resets the logger's handlers, so record at the call itself
    monkeypatch.setattr(early_stop.log, "info", lambda msg, *a: said.append(msg % a))
    before = torch.get_num_threads()
    try:
        t = _fit(tmp_path / "a", tiny_data_root)
        rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
        evals = [(r["epoch"], r["val/acc1"]) for r in rows if "val/acc1" in r]
        # best at epoch 1, no change at 2 and 3: patience 2 stops after epoch 3 of 6
        assert [e for e, _ in evals] == [1, 2, 3] and len({v for _, v in evals}) == 1, evals
        assert t.epoch == 3 and t.step == 3 * t.steps_per_epoch and t.stopped_early
        assert any("early stop: val/acc1 has not improved by more than 0 for 2 evaluation(s)"
                   in line and "stopping after epoch 3 of 6" in line for line in said), said
        last = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
        assert last["trainer"]["early_stop"] == {"best": evals[0][1], "best_epoch": 1,
                                                 "bad_evals": 2, "patience": 2}
        saved = list_checkpoints(tmp_path / "a" / "checkpoints")

        again = _fit(tmp_path / "a", tiny_data_root)  # the stopped run is finished
        assert again.step == t.step and list_checkpoints(tmp_path / "a" / "checkpoints") == saved

        # from the checkpoint of epoch 2 (one bad evaluation counted), in a fresh run dir
        (tmp_path / "b" / "checkpoints").mkdir(parents=True)
        epoch2 = next(p for p in saved
                      if torch.load(p, weights_only=True)["trainer"]["epoch"] == 2)
        for src in (epoch2, epoch2.with_name(epoch2.name + ".sha256")):
            shutil.copy(src, tmp_path / "b" / "checkpoints" / src.name)
        resumed = _fit(tmp_path / "b", tiny_data_root)
        assert resumed.epoch == 3 and resumed.stopped_early
        assert_states_equal(last, torch.load(tmp_path / "b" / "checkpoints" / "last.pt",
                                             weights_only=True))
    finally:
        torch.set_num_threads(before)
