"""Schedules (engine/schedule.py) against hand-computed values, per-module lr/decay multipliers
(`optimizer.custom_keys`) composed with layer decay, and an exact resume mid-warmup and across
a step drop (with repeated augmentation on)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import DEBUG_RECIPE, assert_states_equal, run_tubelet
from test_optim import Tiny  # the layered toy model of the param-group tests
from tubelet.engine.checkpoint import load_checkpoint
from tubelet.engine.optim import match_custom_key, param_groups
from tubelet.engine.schedule import SCHEDULES, SHAPE_KEYS, cosine_lr, lr_schedule
from tubelet.registry import ConfigError
from tubelet import validate_switches

# 10 epochs of 10 steps; warmup 1 epoch = 10 steps
RUN = dict(base_lr=1.0, total_steps=100, epochs=10, warmup_epochs=1)


def test_multistep_drops_at_the_first_step_of_each_milestone_epoch():
    lr = lr_schedule(type="multistep", milestones=[4, 8], gamma=0.1, **RUN)
    assert [lr(s) for s in (0, 5, 10, 39)] == [0.0, 0.5, 1.0, 1.0]
    assert math.isclose(lr(40), 0.1) and math.isclose(lr(79), 0.1)
    assert math.isclose(lr(80), 0.01) and math.isclose(lr(99), 0.01)


def test_a_milestone_inside_the_warmup_scales_the_ramp():
    lr = lr_schedule(type="multistep", milestones=[0.5], gamma=0.1, **RUN)
    assert math.isclose(lr(4), 0.4) and math.isclose(lr(5), 0.05)  # drop at step 5: 0.1 x 5/10
    assert math.isclose(lr(10), 0.1)


def test_step_drops_every_step_size_epochs():
    lr = lr_schedule(type="step", step_size=3, gamma=0.5, **RUN)
    assert lr(29) == 1.0 and lr(30) == 0.5 and lr(59) == 0.5
    assert lr(60) == 0.25 and lr(90) == 0.125 and lr(99) == 0.125


def test_poly_with_power_and_floor():
    run = dict(RUN, total_steps=110, epochs=11)  # warmup 10 steps, 100 after it
    lr = lr_schedule(type="poly", power=2.0, **run)
    assert lr(5) == 0.5 and lr(10) == 1.0
    assert math.isclose(lr(60), 0.25) and lr(110) == 0.0
    floored = lr_schedule(type="poly", power=2.0, min_lr=0.1, **run)
    assert math.isclose(floored(60), 0.1 + 0.9 * 0.25) and math.isclose(floored(110), 0.1)


def test_cosine_is_the_warmup_cosine_it_was():
    lr = lr_schedule(type="cosine", min_lr=0.1, **dict(RUN, total_steps=110, epochs=11))
    kw = dict(base_lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert all(lr(s) == cosine_lr(s, **kw) for s in range(0, 111, 7))
    assert math.isclose(lr(60), 0.55)


def test_the_validator_knows_the_same_schedules_and_keys():
    assert validate_switches.SCHEDULES == SCHEDULES
    assert validate_switches.SHAPE_KEYS == SHAPE_KEYS


def test_custom_keys_longest_match_wins_and_compose_with_layer_decay():
    m = Tiny()
    keys = {"block": {"lr_mult": 0.1, "decay_mult": 2.0}, "block.weight": {"lr_mult": 3.0},
            "head": {"decay_mult": 0.0}}
    assert match_custom_key("block.weight", keys) == "block.weight"  # longer than "block"
    assert match_custom_key("block.bias", keys) == "block"
    assert match_custom_key("norm.weight", keys) is None
    groups = param_groups(m, weight_decay=0.05, layer_decay=0.5, custom_keys=keys)
    by = {id(p): g for g in groups for p in g["params"]}
    assert by[id(m.block.weight)]["lr_scale"] == 0.5 * 3.0  # layer decay x lr_mult
    assert by[id(m.block.weight)]["weight_decay"] == 0.05  # its key sets no decay_mult
    assert by[id(m.block.bias)]["lr_scale"] == pytest.approx(0.05)
    assert by[id(m.block.bias)]["weight_decay"] == 0.0  # a bias skips decay whatever the mult
    assert by[id(m.head.weight)]["weight_decay"] == 0.0 and by[id(m.head.weight)]["lr_scale"] == 1
    assert by[id(m.norm.weight)]["lr_scale"] == 1.0 and by[id(m.pos_embed)]["lr_scale"] == 0.25
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_a_pattern_that_names_no_parameter_is_refused():
    with pytest.raises(ConfigError, match=r"optimizer.custom_keys.bakbone: matches no "):
        param_groups(Tiny(), weight_decay=0.0, custom_keys={"bakbone": {"lr_mult": 0.1}})


# ------------------------------------------------------------------ exact resume
# debug recipe: 6 steps per epoch, 18 steps; warmup 1 epoch (6 steps), drop at epoch 2 (step 12)
SCHEDULE = ["schedule.type=multistep", "schedule.milestones=[2]", "schedule.gamma=0.1"]


def args(root: Path, run_dir: str, *extra: str) -> list[str]:
    return ["train", str(DEBUG_RECIPE), f"data.train.root={root}", f"run.dir={run_dir}",
            "train.checkpoint_interval=1", "train.keep_last=100", "train.threads=1",
            "train.log_interval=1", "data.train.num_sample=2", *SCHEDULE, *extra]


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, tiny_data_root) -> Path:
    cwd = tmp_path_factory.mktemp("ref")
    run_tubelet(*args(tiny_data_root, "ref"), cwd=cwd)
    return cwd / "ref"


def train_lrs(run_dir: Path) -> dict[int, float]:
    """step -> the lr of that step's row (a row is written after its step: row s shows the lr
    step s - 1 trained with)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return {r["step"]: r["train/lr"] for r in rows if "train/lr" in r}


@pytest.mark.slow
def test_resume_mid_warmup_then_across_the_drop_is_exact(tmp_path, tiny_data_root,
                                                         reference_dir):
    """One resumed process covers both: it starts at step 3 of the 6-step warmup and applies
    the drop at step 12 itself (the lr is a function of the step alone, so a resume at the
    drop has nothing more to restore). The runs also use repeated augmentation
    (num_sample 2), whose clips must come back the same after the resume."""
    lrs = train_lrs(reference_dir)
    assert lrs[3] == pytest.approx(1e-3 * 2 / 6) and lrs[12] == pytest.approx(1e-3)
    assert lrs[13] == pytest.approx(1e-4) and lrs[18] == pytest.approx(1e-4)
    start = next(p for p in (reference_dir / "checkpoints").glob("*.pt")
                 if load_checkpoint(p)["trainer"]["step"] == 3)
    run_tubelet(*args(tiny_data_root, "run", f"resume={start}"), cwd=tmp_path)
    assert_states_equal(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt"),
                        load_checkpoint(reference_dir / "checkpoints" / "last.pt"))
    resumed = train_lrs(tmp_path / "run")
    assert min(resumed) == 4 and all(resumed[s] == lrs[s] for s in resumed)


@pytest.mark.parametrize("kind", ["cosine", "poly"])
def test_a_floor_above_an_explicit_lr_is_refused(kind):
    """A cosine or poly decay to a min_lr above optimizer.lr raises the lr all run: refused
    with the recipe (`tubelet config` says so before anything runs)."""
    with pytest.raises(ConfigError, match=rf"^schedule.min_lr: 0.01 is above the peak lr 0.001 "
                                          rf"\(optimizer.lr\); the {kind} schedule would raise"):
        validate_switches.check_schedule({"type": kind, "min_lr": 1e-2}, lr=1e-3)
    validate_switches.check_schedule({"type": kind, "min_lr": 1e-3}, lr=1e-3)  # equal: flat


def test_with_blr_a_floor_above_the_scaled_peak_is_said_and_followed(tmp_path, tiny_data_root):
    """With blr the peak follows the total batch: VideoMAE's HMDB51 recipe (blr 5e-4, min_lr
    1e-5) at a batch of 4 has a peak of 7.8e-6, and its code ramps the lr up to min_lr. So
    does tubelet, with a warning instead of silence."""
    proc = run_tubelet("train", str(DEBUG_RECIPE), f"data.train.root={tiny_data_root}",
                       "run.dir=run", "optimizer={type: adamw, blr: 0.001}", "train.epochs=1",
                       "schedule.min_lr=0.0001", "schedule.warmup_epochs=0", cwd=tmp_path)
    assert ("schedule.min_lr: 0.0001 is above the peak lr 1.5625e-05 (blr x total batch / 256); "
            "the cosine schedule would raise the lr as the run goes on") in proc.stderr
    lrs = train_lrs(tmp_path / "run")
    assert lrs[min(lrs)] < lrs[max(lrs)] <= 1e-4  # rising towards the floor, as the code says
