"""Every seed recipe trains a few steps and evaluates on a synthetic dataset in its real layout
and container (tubelet.data.synth_layouts), through the real CLI. The overrides only shrink the
model (depth, width, frames, crop size), point the data at the layout and keep the run short;
the recipes' data formats, transforms, tasks, optimisers and schedules are exercised as shipped.
(amp: none on CPU, to keep CI lean.)"""
from __future__ import annotations

import json
import math

import pytest

from conftest import REPO, run_tubelet, tubelet_here

COMMON = ["train.device=cpu", "train.epochs=1", "train.eval_interval=1", "train.log_interval=1",
          "train.amp=none", "train.tensorboard=false", "data.num_workers=0"]
TINY_VIT = ["model.type=vit", "model.img_size=16", "model.patch_size=8", "model.embed_dim=16",
            "model.depth=1", "model.num_heads=2"]


def _gaze360(root):
    data = [f"data.train.root={root / 'imgs'}", f"data.val.root={root / 'imgs'}",
            f"data.train.annotations={root / 'train.txt'}",
            f"data.val.annotations={root / 'validation.txt'}",
            f"data.test.annotations={root / 'test.txt'}"]  # root, frames, size: val's
    return [*data, "data.batch_size=16", "data.train.num_frames=3", "data.val.num_frames=3",
            "data.train.transforms[0].size=16", "data.val.transforms[0].size=16",
            *TINY_VIT, "model.num_frames=3"]


def _aesthetics(root):
    return [f"data.train.path={root / 'clip_vit_l14_train.npz'}",
            f"data.val.path={root / 'clip_vit_l14_test.npz'}", "data.batch_size=4"]


def _essmc2(root):
    return [f"data.train.root={root}", f"data.val.root={root}", f"data.test.root={root}",
            "data.batch_size=4", "data.train.num_frames=4", "data.val.num_frames=4",
            "data.test.num_frames=4", "data.test.temporal_views=2",
            "data.train.transforms[0].size=32", "data.val.transforms[0].size=32",
            "data.val.transforms[1].size=32", "data.test.transforms[0].size=32",
            "model.backbone={type: resnet3d, block: basic, layers: [1, 1, 1, 1], base_width: 4, "
            "num_classes: 0, dropout: 0.0}", "model.head.num_classes=4", "task.num_classes=4"]


def _videomae_hmdb51(root):
    return [f"data.train.root={root}", f"data.val.root={root}", "data.batch_size=4",
            "data.train.num_frames=4", "data.val.num_frames=4", "data.train.stride=2",
            "data.val.stride=2", "data.train.transforms[1].size=16",
            "data.val.transforms[0].size=16", "data.val.transforms[1].size=16",
            "data.test=null", *TINY_VIT, "model.num_frames=4", "model.num_classes=4"]


def _dynamic_batch(kinetics, ssv2):
    """The dynamic-batch debug recipe over a composed set: Kinetics' H.264 MP4 clips and SSv2's
    VP9 WebM, each in its own layout, one sampler drawing clip length and aspect per batch."""
    children = [{"type": "kinetics", "annotations": str(kinetics / "train.csv"),
                 "root": str(kinetics / "videos"), "stride": 1},
                {"type": "ssv2", "annotations": str(ssv2 / "labels/train.json"),
                 "labels": str(ssv2 / "labels/labels.json"), "root": str(ssv2 / "videos"),
                 "sampling": "interval", "stride": 1}]
    train = {"type": "composed", "weights": [1, 1], "datasets": children,
             "transforms": [{"type": "random_resized_crop", "size": 16, "scale": [0.5, 1.0]},
                            {"type": "normalize", "mean": [0.45] * 3, "std": [0.225] * 3}]}
    val = {"type": "kinetics", "annotations": str(kinetics / "val.csv"), "subset": "test",
           "root": str(kinetics / "videos"), "classes_from": str(kinetics / "train.csv"),
           "num_frames": 4, "stride": 2,
           "transforms": [{"type": "center_crop", "size": 16},
                          {"type": "normalize", "mean": [0.45] * 3, "std": [0.225] * 3}]}
    return [f"data.train={json.dumps(train)}", f"data.val={json.dumps(val)}"]


# name: (recipe, layouts, overrides from the layout roots, the metric its eval must report)
RECIPES = {
    "gaze360": ("configs/gaze360/finetune_videomae_vit_base.yaml", ["gaze360"], _gaze360,
                "val/angular_error"),
    "aesthetics": ("configs/aesthetics/ava_clip_features.yaml", ["ava-features"], _aesthetics,
                   "val/srcc"),
    "essmc2": ("configs/essmc2/finetune_r3d50_hmdb51.yaml", ["hmdb51"], _essmc2, "val/acc1"),
    "videomae_hmdb51": ("configs/videomae/finetune_vit_base_hmdb51.yaml", ["hmdb51"],
                        _videomae_hmdb51, "val/acc1"),
    "dynamic_batch": ("configs/debug/dynamic_batch_tiny.yaml", ["kinetics", "ssv2"],
                      _dynamic_batch, "val/acc1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_seed_recipe_trains_and_evaluates_on_its_layout(name, layout_root, tmp_path, capsys):
    recipe, layouts, overrides, metric = RECIPES[name]
    args = [str(REPO / recipe), f"run.dir={tmp_path / 'run'}", *COMMON,
            *overrides(*[layout_root(layout) for layout in layouts])]
    run_tubelet("train", *args, cwd=tmp_path, timeout=300)
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) >= 2 and all(math.isfinite(x) for x in losses), rows
    evals = [r for r in rows if metric in r]
    assert len(evals) == 1 and math.isfinite(evals[0][metric]), rows
    if name in ("gaze360", "essmc2"):  # their final test, in the layout's test split
        test = metric.replace("val/", "test/")
        assert [r["step"] for r in rows if test in r] == [evals[0]["step"]], rows
        results = json.loads((tmp_path / "run/test_results.json").read_text())
        assert math.isfinite(results["metrics"][test]) and results["num_videos"] > 0
        assert (tmp_path / "run/test/predictions.jsonl").read_text().count("\n") == \
            results["num_videos"]
    assert (tmp_path / "run/checkpoints/last.pt").is_file()
    if name == "gaze360":  # `tubelet eval` on the checkpoint scores what fit's eval scored
        # (its main() in this process, a torch import fewer: eval as a process is test_cli's)
        proc = tubelet_here("eval", *args, f"checkpoint={tmp_path / 'run/checkpoints/last.pt'}",
                            cwd=tmp_path, capsys=capsys)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout)[metric] == pytest.approx(evals[0][metric], rel=1e-6)
