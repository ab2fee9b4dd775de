"""The end of `fit`: the last epoch is always evaluated and may be the best; a warmup that the
run never finishes is said, with the numbers."""
import torch

from conftest import DEBUG_RECIPE
from tubelet.build import build_trainer
from tubelet.config import load_config


def trainer_for(tmp_path, tiny_data_root, *overrides):
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={tiny_data_root}",
                                     f"run.dir={tmp_path / 'run'}", "train.progress=false",
                                     *overrides])
    return build_trainer(cfg)


def test_the_last_epoch_is_evaluated_whatever_the_interval(tmp_path, tiny_data_root):
    before = torch.get_num_threads()
    try:
        for epochs, interval, evaluated in ((2, 5, [2]), (3, 2, [2, 3])):
            t = trainer_for(tmp_path / f"{epochs}_{interval}", tiny_data_root,
                            f"train.epochs={epochs}", f"train.eval_interval={interval}")
            seen = []
            evaluate = t.evaluate
            t.evaluate = lambda: (seen.append(t.epoch), evaluate())[1]
            metrics = t.fit()
            assert seen == evaluated and "val/acc1" in metrics
            assert (t.ckpt_dir / "best.pt").is_file()  # the only eval was the best so far
    finally:
        torch.set_num_threads(before)


def test_a_warmup_longer_than_the_run_is_a_warning_with_the_numbers(tmp_path, tiny_data_root,
                                                                    monkeypatch):
    from tubelet.engine import trainer as trainer_module
    warned = []
    # build_trainer resets the logger's handlers, so record at the call itself
    monkeypatch.setattr(trainer_module.log, "warning", lambda msg, *a: warned.append(msg % a))
    before = torch.get_num_threads()
    try:
        trainer_for(tmp_path / "a", tiny_data_root, "train.epochs=2", "schedule.warmup_epochs=1")
        assert warned == []  # 6 of 12 steps: an ordinary warmup
        trainer_for(tmp_path / "b", tiny_data_root, "train.epochs=1", "schedule.warmup_epochs=3")
    finally:
        torch.set_num_threads(before)
    assert warned == ["schedule.warmup_epochs: 3 epochs (18 steps) is not shorter than the run "
                      "(1 epochs, 6 steps); the lr stops at 0.000278, 28% of its peak 0.001"]
