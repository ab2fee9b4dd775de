"""The NaN guard decided on the device (engine/nan_check.py): a non-finite gradient or loss at
step k is never applied (weights and optimizer state after step k equal those before it),
and the guard's policy still reports it, at the next read, naming step k."""
import math

import pytest
import torch

from conftest import DEBUG_RECIPE
from tubelet.build import build_trainer
from tubelet.config import load_config
from tubelet.engine.guard import NonFiniteError
from tubelet.engine.hooks import Hook

def trainer_for(tmp_path, root, *overrides):
    cfg = load_config(DEBUG_RECIPE, [f"data.train.root={root}", f"run.dir={tmp_path / 'run'}",
                                     "train.progress=false", *overrides])
    return build_trainer(cfg)


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


class Snapshots(Hook):
    """Weights and optimizer state after every step, keyed by the step count."""

    def __init__(self) -> None:
        self.after: dict[int, tuple[dict, dict]] = {}

    def after_step(self, trainer) -> None:
        opt = {id(p): {k: v.clone() for k, v in s.items()}
               for p, s in trainer.optimizer.state.items()}
        self.after[trainer.step] = (params(trainer), opt)


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k])
                                        else _equal(a[k], b[k]) for k in a)


def _poison(trainer, *, grad_at: int | set[int] | None = None,
            loss_at: int | None = None) -> None:
    """NaN in one gradient (the loss finite) at optimizer step(s) `grad_at`, in the loss at
    `loss_at`."""
    bad = grad_at if isinstance(grad_at, set) else {grad_at}
    trainer.model.head.weight.register_hook(
        lambda g: g * math.nan if trainer.step in bad else g)
    loss = trainer.task.loss
    trainer.task.loss = lambda model, batch: loss(model, batch) * (
        math.nan if trainer.step == loss_at else 1.0)


@pytest.mark.parametrize("host_read", [True, False], ids=["cpu-skips-the-call", "found_inf"])
def test_nonfinite_steps_are_skipped_on_the_device_and_reported(tmp_path, tiny_data_root,
                                                               capfd, host_read):
    """Both ways a step is skipped: one CPU process reads the flag and does not call step();
    elsewhere (a GPU, several ranks) the fused kernel gets it as `found_inf`."""
    t = trainer_for(tmp_path, tiny_data_root, "train.nan_guard=skip", "data.val=null",
                    "train.log_interval=100", "train.clip_grad=1.0", "train.epochs=1")
    assert t.nan_check is not None and t.optimizer.defaults["fused"]  # the sync-free path
    assert t.nan_check.host_readable  # one CPU process
    t.nan_check.host_readable = host_read
    snaps = Snapshots()
    t.hooks.append(snaps)
    _poison(t, grad_at=2, loss_at=4)
    t.fit()
    assert t.step == 6 and sorted(snaps.after) == list(range(1, 7))
    for bad in (2, 4):  # weights and optimizer state after the bad step = before it
        assert _equal(snaps.after[bad][0], snaps.after[bad + 1][0]), bad
        assert _equal(snaps.after[bad][1], snaps.after[bad + 1][1]), bad
    assert not _equal(snaps.after[3][0], snaps.after[4][0])  # and it trains in between
    assert all(torch.isfinite(v).all() for v in params(t).values())
    err = capfd.readouterr().err
    for what, step in (("gradient norm", 2), ("loss", 4)):
        assert f"non-finite {what} at step {step}: update skipped on all ranks (1 in a row)" \
            in err, err[-2000:]


def test_stop_policy_raises_at_the_next_read_and_saves_nothing_after(tmp_path, tiny_data_root):
    """No clipping: the check runs over the gradients themselves."""
    t = trainer_for(tmp_path, tiny_data_root, "data.val=null", "train.log_interval=100",
                    "train.checkpoint_interval=2", "train.clip_grad=null",
                    "train.epochs=1")
    assert t.nan_check is not None
    _poison(t, grad_at=3)
    with pytest.raises(NonFiniteError, match="non-finite gradient norm at step 3; "
                                             "no rank applied the update"):
        t.fit()
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert saved == ["step_00000002.pt"]  # the save at step 4 read the flag first


@pytest.mark.parametrize("host_read", [True, False], ids=["cpu-skips-the-call", "found_inf"])
def test_skip_counts_steps_in_a_row_and_a_finite_step_resets_it(tmp_path, tiny_data_root,
                                                                capfd, host_read):
    """`skip` with nan_skip_limit 2: bad steps 1, 2, then 4 pass (the finite step 3 ends the
    run of two); bad steps 1, 2, 3 are one too many."""
    def run(bad: set[int], name: str):
        t = trainer_for(tmp_path / name, tiny_data_root, "train.nan_guard=skip",
                        "train.nan_skip_limit=2", "data.val=null", "train.log_interval=100",
                        "train.clip_grad=null", "train.epochs=1")
        t.nan_check.host_readable = host_read
        _poison(t, grad_at=bad)
        t.fit()
        return t

    assert run({1, 2, 4}, "ok").step == 6
    err = capfd.readouterr().err
    for step, in_a_row in ((1, 1), (2, 2), (4, 1)):
        assert f"non-finite gradient norm at step {step}: update skipped on all ranks " \
               f"({in_a_row} in a row)" in err, err[-2000:]
    with pytest.raises(NonFiniteError, match="3 non-finite steps in a row, more than "
                                             "train.nan_skip_limit=2; the last: non-finite "
                                             "gradient norm at step 3"):
        run({1, 2, 3}, "over")
