"""Unlabelled splits (Kinetics' test CSV without `label`, SSv2's test.json of ids, a video_list of
bare paths) load for prediction with no `label` in the items, and training or scoring on them is
refused with one line naming the split and the file."""
from __future__ import annotations

import json

import pytest

import tubelet.data.datasets  # noqa: F401  (registers the formats)
from conftest import run_tubelet, tubelet_here
from tubelet.registry import DATASETS, ConfigError, build


def _unlabelled_nodes(roots, tmp_path) -> dict[str, dict]:
    k = roots["kinetics"]
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\n"
                                       "--nQbRBEz2s,104,114,test\n-3Jh1wuZsRo,0,10,test\n")
    (tmp_path / "test.json").write_text(json.dumps([{"id": "74225"}, {"id": "78687"}]))
    (tmp_path / "list.txt").write_text("clips/a.mp4\nclips/b c.mp4\n")
    return {
        "kinetics": {"type": "kinetics", "annotations": str(tmp_path / "test.csv"),
                     "root": str(k / "videos"), "classes_from": str(k / "train.csv")},
        "ssv2": {"type": "ssv2", "annotations": str(tmp_path / "test.json"),
                 "labels": str(roots["ssv2"] / "labels.json"),
                 "root": str(roots["ssv2"] / "videos")},
        "video_list": {"type": "video_list", "annotations": str(tmp_path / "list.txt"),
                       "root": str(roots["video_list"])},
    }


@pytest.mark.parametrize("fmt", ["kinetics", "ssv2", "video_list"])
def test_unlabelled_split_loads_without_labels_and_refuses_training(format_roots, tmp_path, fmt):
    node = _unlabelled_nodes(format_roots, tmp_path)[fmt]
    data = build({**node, "subset": "test", "num_frames": 4, "stride": 2}, DATASETS)
    assert not data.labelled and data.unlabelled == node["annotations"]
    assert len(data) == 2 and not data.bad
    assert [s.target for s in data.samples] == [None, None]
    for i in range(2):
        item = data[i]
        assert "label" not in item and "target" not in item
        assert item["video"].shape[:2] == (3, 4) and item["index"] == i
    with pytest.raises(ConfigError, match=rf"^annotations: {node['annotations']} has no labels; "
                                          r"training needs them"):
        build({**node, "subset": "train"}, DATASETS)


def test_kinetics_test_csv_keeps_the_classes_of_classes_from(format_roots, tmp_path):
    node = _unlabelled_nodes(format_roots, tmp_path)["kinetics"]
    data = build({**node, "subset": "test"}, DATASETS)
    assert data.classes == ["abseiling", "air drumming", "zumba"]
    alone = build({**node, "subset": "test", "classes_from": None}, DATASETS)
    assert alone.classes == [] and alone.num_classes == 0


def test_mixed_labelled_and_unlabelled_entries_are_refused(format_roots, tmp_path):
    ssv2 = format_roots["ssv2"]
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"id": "74225"}, json.loads((ssv2 / "validation.json")
                                                             .read_text())[0]]))
    with pytest.raises(ConfigError, match=r"mixed\.json:\[1\]: has a label, but entry \[0\]"):
        build({"type": "ssv2", "annotations": str(mixed), "labels": str(ssv2 / "labels.json"),
               "root": str(ssv2 / "videos"), "subset": "test"}, DATASETS)
    lst = tmp_path / "l.txt"
    lst.write_text("clips/a.mp4\nclips/d.mp4 1\n")
    with pytest.raises(ConfigError, match=r"l\.txt:2: a label, but line 1 has none"):
        build({"type": "video_list", "annotations": str(lst), "subset": "test"}, DATASETS)


def test_composed_reports_an_unlabelled_child(format_roots, tmp_path):
    from tubelet.data.datasets.base import require_labels
    node = _unlabelled_nodes(format_roots, tmp_path)["video_list"]
    child = {**node, "subset": "test", "num_frames": 4}
    data = build({"type": "composed", "datasets": [child]}, DATASETS)
    with pytest.raises(ConfigError, match=r"^data\.val: \S+list\.txt has no labels; training and "
                                          r"metrics need them"):
        require_labels(data, key="data.val")


RECIPE = """\
seed: 0
run: {{name: unlabelled}}
data:
  batch_size: 2
  train: {train}
  val: {val}
model: {{type: vit, img_size: 16, patch_size: 8, num_frames: 4, tubelet_size: 2, embed_dim: 16,
        depth: 1, num_heads: 2, num_classes: 3}}
task: {{type: classification, num_classes: 3}}
optimizer: {{type: adamw, lr: 1.0e-3}}
train: {{epochs: 1, device: cpu, tensorboard: false}}
"""


@pytest.mark.parametrize("split", ["train", "val"])
def test_train_refuses_an_unlabelled_split_in_one_line(format_roots, tmp_path, split, capsys):
    nodes = _unlabelled_nodes(format_roots, tmp_path)
    labelled = {"type": "video_list", "annotations": str(format_roots["video_list"] / "train.txt"),
                "num_frames": 4, "transforms": [{"type": "center_crop", "size": 16}]}
    unlabelled = {**nodes["kinetics"], "subset": "test", "num_frames": 4,
                  "transforms": [{"type": "center_crop", "size": 16}]}
    # data.train with subset: test slips past the dataset's own check; build refuses it
    train, val = (unlabelled, labelled) if split == "train" else (labelled, unlabelled)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(train=json.dumps(train),
                                    val=json.dumps({**val, "subset": "test"})))
    # data.train through a real process; data.val through the same main() in this process
    # (a torch import fewer: the refusal is the code's, not the interpreter's)
    command = ("train", str(recipe), f"run.dir={tmp_path / 'run'}")
    proc = (run_tubelet(*command, cwd=tmp_path, check=False) if split == "train" else
            tubelet_here(*command, cwd=tmp_path, capsys=capsys))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (f"error: data.{split}: {tmp_path / 'test.csv'} has no labels; training "
                         f"and metrics need them (an unlabelled split loads for prediction only)")
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_eval_refuses_an_unlabelled_val_split(format_roots, tmp_path, capsys):
    """`tubelet eval` would score the model against labels the split does not have: refused."""
    import torch

    from tubelet.build import build_model
    from tubelet.config import load_config
    nodes = _unlabelled_nodes(format_roots, tmp_path)
    crop = [{"type": "center_crop", "size": 16}]
    train = {"type": "video_list", "annotations": str(format_roots["video_list"] / "train.txt"),
             "num_frames": 4, "transforms": crop}
    val = {**nodes["ssv2"], "subset": "test", "num_frames": 4, "transforms": crop}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(train=json.dumps(train), val=json.dumps(val)))
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": build_model(load_config(recipe)).state_dict()}, checkpoint)
    # in this process (a torch import fewer); eval's exit 2 as a process: tests/test_cli.py
    proc = tubelet_here("eval", str(recipe), f"checkpoint={checkpoint}", cwd=tmp_path,
                        capsys=capsys)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: data.val: {tmp_path / 'test.json'} has no labels; training and metrics need "
        f"them (an unlabelled split loads for prediction only)")
    assert proc.stdout == ""  # no metrics printed
