"""Every bad value of the run switches, the schedule shapes and the lr multipliers is refused by
`tubelet config` with one line and exit 2, before anything is written."""
from __future__ import annotations

import pytest

from conftest import REPO
from tubelet.cli import main

Q, D = "quickstart.yaml", "debug/classify_tiny.yaml"  # D has no schedule.min_lr
BAD = [
    (Q, ["schedule.type=cosin"],
     "schedule.type: unknown 'cosin'; choose one of ['cosine', 'poly', 'step', 'multistep']; "
     "did you mean 'cosine'?"),
    (D, ["schedule.type=multistep", "schedule.milestones=[5, 3]"],
     "schedule.milestones: must be strictly increasing, got [5, 3]"),
    (D, ["schedule.type=multistep", "schedule.milestones=[3, 3]"],
     "schedule.milestones: must be strictly increasing, got [3, 3]"),
    (D, ["schedule.type=multistep", "schedule.milestones=[0, 3]"],
     "schedule.milestones: must be > 0, got 0"),
    (D, ["schedule.type=multistep"],
     "schedule.milestones: required for schedule.type 'multistep': a list of epochs, got null"),
    (Q, ["schedule.type=step", "schedule.step_size=2"],
     "schedule.min_lr: not used by schedule.type 'step' (only by cosine, poly)"),
    (D, ["schedule.type=step"],
     "schedule.step_size: required for schedule.type 'step' (epochs between drops)"),
    (D, ["schedule.type=step", "schedule.step_size=2", "schedule.gamma=1.5"],
     "schedule.gamma: must be in (0, 1], got 1.5"),
    (Q, ["schedule.type=poly", "schedule.power=0"], "schedule.power: must be > 0, got 0"),
    (Q, ["schedule.gamma=0.1"], "schedule.gamma: not used by schedule.type 'cosine' (only by "
                                "step, multistep)"),
    (Q, ["schedule.milestone=[2]"], "schedule.milestone: unknown key; did you mean 'milestones'?"),
    (Q, ["optimizer.custom_keys={blocks: {lr_mult: -0.1}}"],
     "optimizer.custom_keys.blocks.lr_mult: must be a finite number >= 0, got -0.1"),
    (Q, ["optimizer.custom_keys={blocks: {lr_mul: 0.1}}"],
     "optimizer.custom_keys.blocks.lr_mul: unknown key; did you mean 'lr_mult'?"),
    (Q, ["optimizer.custom_keys=[0.1]"],
     "optimizer.custom_keys: expected dict or null, got list"),
    (Q, ["model.grad_checkpointing=maybe"],
     "model.grad_checkpointing: expected true or false, got string 'maybe'"),
    (Q, ["model={type: video_classifier, backbone: {type: resnet3d_18, num_classes: 0}, "
         "head: {type: linear, num_classes: 8}, grad_checkpointing: 1}", "task.num_classes=8"],
     "model.grad_checkpointing: expected true or false, got integer 1"),
    (Q, ["train.compile={mode: fast}"],
     "train.compile.mode: unknown 'fast'; choose one of ['default', 'reduce-overhead', "
     "'max-autotune', 'max-autotune-no-cudagraphs']"),
    (Q, ["train.compile={mdoe: default}"],
     "train.compile.mdoe: unknown key; did you mean 'mode'? (one of mode, fullgraph, dynamic)"),
    (Q, ["train.compile=2"], "train.compile: expected bool or dict or null, got integer 2"),
    (Q, ["train.channels_last=true"],
     "train.channels_last: applies to 3D CNNs (resnet3d_*, or a video_classifier with one as "
     "backbone), not to model 'vit'; remove the key"),
    (Q, ["data.train.num_sample=0"], "data.train.num_sample: expected an integer >= 1, got 0"),
    (Q, ["data.train.num_sample=1.5"], "data.train.num_sample: expected an integer >= 1, got 1.5"),
    (Q, ["data.train.num_sample=1000000000000"],
     "data.train.num_sample: 1000000000000 is out of range (an integer here is below 2**31)"),
    (Q, ["data.val.num_sample=2"],
     "data.val.num_sample: repeated augmentation is for data.train only"),
]


@pytest.mark.parametrize("recipe,overrides,expected", BAD, ids=[" ".join(o)[:50] for _, o, _ in BAD])
def test_bad_switch_is_one_line_exit_2(recipe, overrides, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", str(REPO / "configs" / recipe), *overrides]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {expected}"]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("overrides", [
    ["model.grad_checkpointing=true", "train.compile={mode: default}",
     "schedule.type=multistep", "schedule.milestones=[5, 10]",
     "optimizer.custom_keys={blocks: {lr_mult: 0.5}, head: {decay_mult: 0}}",
     "data.train.num_sample=2"],
    ["model={type: video_classifier, backbone: {type: resnet3d_18, num_classes: 0}, "
     "head: {type: linear, num_classes: 4}}", "model.grad_checkpointing=true",
     "train.channels_last=true", "schedule.type=poly", "schedule.power=0.9",
     "task.num_classes=4"],
], ids=["vit", "resnet3d"])
def test_good_switches_pass(overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", str(REPO / "configs" / D), *overrides]) == 0, capsys.readouterr().err


def test_a_custom_key_that_names_no_parameter_stops_train_before_the_run_dir(tmp_path,
                                                                            monkeypatch):
    """`train` builds the model on the meta device first (build.dry_forward) and matches the
    patterns against its parameter names there."""
    from tubelet import build
    from tubelet.config import load_config
    from tubelet.registry import ConfigError
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO / "configs" / Q, ["optimizer.custom_keys={blokcs: {lr_mult: 0.1}}"])
    with pytest.raises(ConfigError) as e:
        build.dry_forward(cfg, build.validate_config(cfg))
    assert str(e.value) == ("optimizer.custom_keys.blokcs: matches no parameter name of the "
                            "model (e.g. 'cls_token'); did you mean 'blocks'?")
    assert not any(tmp_path.iterdir())


def test_weight_decay_that_wipes_the_weights_is_refused_for_adamw_and_sgd_not_lars():
    """1 - lr x weight_decay <= 0 zeroes or flips every weight each step (AdamW's decoupled
    decay, SGD's coupled one); LARS's trust ratio rescales per layer, so it is left alone. With
    blr the peak is known when the optimizer is built, and checked there."""
    import torch

    from tubelet.build import build_optimizer
    from tubelet.registry import ConfigError
    from tubelet.validate_switches import check_decay
    for kind in ("adamw", "sgd"):
        with pytest.raises(ConfigError, match=r"^optimizer.weight_decay: 20 x the peak lr 0.1 = "
                                              r"2; each step would scale every weight by -1 "):
            check_decay({"type": kind, "weight_decay": 20}, lr=0.1)
        check_decay({"type": kind, "weight_decay": 9.9}, lr=0.1)  # 0.99: shrinks, allowed
    check_decay({"type": "lars", "weight_decay": 20}, lr=0.1)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"^optimizer.weight_decay: 1000 x the peak lr 0.002"):
        build_optimizer({"type": "adamw", "blr": 1e-3, "weight_decay": 1000}, model,
                        total_batch_size=512)  # blr 1e-3 x 512 / 256
    build_optimizer({"type": "adamw", "blr": 1e-3, "weight_decay": 0.05}, model,
                    total_batch_size=512)
