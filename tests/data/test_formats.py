"""Every dataset format reads its published annotation layout (fixtures in tests/data/fixtures)
next to real media files, and names file:line on a malformed annotation."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import tubelet.data.datasets  # noqa: F401  (registers the formats)
from tubelet.data.transforms import Compose, RandomHorizontalFlip
from tubelet.registry import DATASETS, ConfigError, build


def _check_item(item, *, frames, label=None, size=(24, 32)):
    assert item["video"].dtype == torch.float32
    assert item["video"].shape == (3, frames, *size)
    if label is not None:
        assert item["label"] == label
    assert item["bad"] == "" and item["view"] == 0


def test_ucf101(format_roots):
    root = str(format_roots["ucf101"])
    train = build({"type": "ucf101", "root": root, "num_frames": 4, "stride": 2}, DATASETS)
    test = build({"type": "ucf101", "root": root, "subset": "test", "num_frames": 4}, DATASETS)
    assert train.classes == ["ApplyEyeMakeup", "BandMarching", "HandstandPushups"]
    assert [s.target for s in train.samples] == [0, 1, 2, 2]
    assert [s.target for s in test.samples] == [0, 2]  # the class comes from the folder
    assert train.infos[0].num_frames == 12  # AVI / MPEG-4
    _check_item(train[(3, 1)], frames=4, label=2)
    _check_item(test[1], frames=4, label=2)


def test_ucf101_wrong_class_id_names_file_and_line(format_roots, tmp_path):
    root = shutil.copytree(format_roots["ucf101"], tmp_path / "u")
    lst = root / "ucfTrainTestlist" / "trainlist01.txt"
    text = lst.read_text().replace("BandMarching_g08_c01.avi 2", "BandMarching_g08_c01.avi 3")
    lst.write_text(text)
    with pytest.raises(ConfigError, match=r"trainlist01\.txt:2: class id 3"):
        build({"type": "ucf101", "root": str(root)}, DATASETS)


def test_kinetics_both_layouts_and_classes_from_train(format_roots):
    root = format_roots["kinetics"]
    train = build({"type": "kinetics", "annotations": str(root / "train.csv"),
                   "root": str(root / "videos"), "num_frames": 4, "stride": 2}, DATASETS)
    val = build({"type": "kinetics", "annotations": str(root / "validate.csv"),
                 "root": str(root / "videos"), "subset": "test", "num_frames": 4,
                 "classes_from": str(root / "train.csv")}, DATASETS)
    assert train.classes == ["abseiling", "air drumming", "zumba"]
    assert [s.target for s in train.samples] == [0, 1, 0, 2]
    assert [s.target for s in val.samples] == [1, 2] and not val.bad  # flat layout found
    assert train.samples[0].path.name == "--07WQ2iBlw_000001_000011.mp4"
    _check_item(val[1], frames=4, label=2)


def test_kinetics_missing_column_and_unknown_label(format_roots, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id,time_end\nabseiling,x,10\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:1: missing column"):
        build({"type": "kinetics", "annotations": str(bad), "root": str(tmp_path)}, DATASETS)
    unknown = tmp_path / "val.csv"
    unknown.write_text("label,youtube_id,time_start,time_end,split\nyoga,x,0,10,val\n")
    with pytest.raises(ConfigError, match=r"val\.csv:2: label 'yoga'"):
        build({"type": "kinetics", "annotations": str(unknown), "root": str(tmp_path),
               "classes_from": str(format_roots["kinetics"] / "train.csv")}, DATASETS)


def test_ssv2_webm_templates_and_segments(format_roots):
    root = format_roots["ssv2"]
    node = {"type": "ssv2", "labels": str(root / "labels.json"), "root": str(root / "videos"),
            "num_frames": 4}
    train = build({**node, "annotations": str(root / "train.json")}, DATASETS)
    val = build({**node, "annotations": str(root / "validation.json"), "subset": "test"},
                DATASETS)
    assert [s.target for s in train.samples] == [0, 1, 2] and train.sampling == "segment"
    assert train.infos[0].num_frames == 10  # WebM: counted from packets
    _check_item(train[(0, 3)], frames=4, label=0)
    _check_item(val[0], frames=4, label=1)


def test_ssv2_unknown_template(format_roots, tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('[{"id": "1", "template": "Lifting [something] up"}]')
    root = format_roots["ssv2"]
    with pytest.raises(ConfigError, match=r"t\.json:\[0\]: template 'Lifting something up'"):
        build({"type": "ssv2", "annotations": str(bad), "labels": str(root / "labels.json"),
               "root": str(root / "videos")}, DATASETS)


def test_gaze360_window_unit_target_and_missing_neighbours(format_roots):
    root = format_roots["gaze360"]
    data = build({"type": "gaze360", "annotations": str(root / "train.txt"),
                  "root": str(root / "imgs")}, DATASETS)
    item = data[0]
    assert item["video"].shape == (3, 7, 24, 32) and "label" not in item
    assert torch.allclose(item["target"].norm(), torch.tensor(1.0))
    assert torch.allclose(item["target"], torch.tensor([-0.7427, 0.1845, -0.6437]) /
                          torch.tensor([-0.7427, 0.1845, -0.6437]).norm())
    names = [p.name for p in data.window(data.samples[0].path)]
    assert names == ["000129.jpg", "000129.jpg", "000130.jpg", "000131.jpg", "000132.jpg",
                     "000133.jpg", "000134.jpg"]  # 128 is missing: its nearest frame stands in
    lone = data[2]["video"]  # no neighbours at all: the centre frame 7 times
    assert all(torch.equal(lone[:, 0], lone[:, t]) for t in range(7))


def test_gaze360_flip_mirrors_the_clip_and_the_gaze_together(format_roots):
    root = format_roots["gaze360"]
    node = {"type": "gaze360", "annotations": str(root / "train.txt"), "root": str(root / "imgs")}
    plain = build(node, DATASETS)
    always = build({**node, "flip": 1.0}, DATASETS)
    for key in [(0, 0), (1, 3)]:
        a, b = plain[key], always[key]
        assert torch.equal(b["video"], a["video"].flip(-1))
        assert torch.equal(b["target"], a["target"] * torch.tensor([-1.0, 1.0, 1.0]))
    half = build({**node, "flip": 0.5}, DATASETS)
    flipped = [bool(half[(0, e)]["target"][0] != plain[0]["target"][0]) for e in range(16)]
    assert 0 < sum(flipped) < 16  # drawn per sample and epoch
    test = build({**node, "flip": 1.0, "subset": "test"}, DATASETS)
    assert torch.equal(test[0]["target"], plain[0]["target"])  # never at test time
    with pytest.raises(ConfigError, match="random_horizontal_flip would mirror the eyes"):
        build(node, DATASETS, transform=Compose([RandomHorizontalFlip()]))


def test_video_list_paths_with_spaces_and_label_range(format_roots, tmp_path):
    ann = format_roots["video_list"] / "train.txt"
    data = build({"type": "video_list", "annotations": str(ann), "num_frames": 4, "stride": 3},
                 DATASETS)
    assert data.num_classes == 3 and data.samples[1].path.name == "b c.mp4"
    _check_item(data[1], frames=4, label=2)
    with pytest.raises(ConfigError, match=r"train\.txt:3: label 2 out of range \[0, 2\)"):
        build({"type": "video_list", "annotations": str(ann), "num_classes": 2}, DATASETS)
    bad = tmp_path / "l.txt"
    bad.write_text("a.mp4 1\nb.mp4 cat\n")  # the first line has a label, so every line needs one
    with pytest.raises(ConfigError, match=r"l\.txt:2: expected '<video path> <integer label>'"):
        build({"type": "video_list", "annotations": str(bad)}, DATASETS)
    bad.write_text("a.mp4 cat\n")  # no integer label at all: an unlabelled list, not for training
    with pytest.raises(ConfigError, match=r"annotations: \S*l\.txt has no labels"):
        build({"type": "video_list", "annotations": str(bad)}, DATASETS)


def test_image_folder_one_frame_clips(format_roots):
    data = build({"type": "image_folder", "root": str(format_roots["image_folder"])}, DATASETS)
    assert data.classes == ["cat", "dog"] and len(data) == 5
    _check_item(data[4], frames=1, label=1, size=(20, 30))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".npy"])
def test_features_files(tmp_path, suffix):
    feats = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    scores = np.linspace(1, 9, 5).astype(np.float32)  # AVA-style mean scores
    node = {"type": "features", "path": str(tmp_path / f"f{suffix}")}
    if suffix == ".npz":
        np.savez(tmp_path / "f.npz", features=feats, targets=scores)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file
        save_file({"features": feats, "targets": scores}, str(tmp_path / "f.safetensors"))
    else:
        np.save(tmp_path / "f.npy", feats)
        np.save(tmp_path / "t.npy", np.arange(5) % 2)  # integer targets: class labels
        node["targets"] = str(tmp_path / "t.npy")
    data = build(node, DATASETS)
    item = data[3]
    assert torch.allclose(item["features"], torch.from_numpy(feats[3])) and len(data) == 5
    if suffix == ".npy":
        assert item["label"] == 1 and data.num_classes == 2
    else:
        assert float(item["target"]) == pytest.approx(scores[3])


def test_index_file_is_written_and_reused_without_opening_videos(format_roots, monkeypatch):
    ann = format_roots["video_list"] / "train.txt"
    build({"type": "video_list", "annotations": str(ann)}, DATASETS)
    assert (ann.parent / "tubelet_index.npz").is_file()
    import tubelet.data.metadata as metadata

    def no_probe(path):
        raise AssertionError(f"opened {path}")
    monkeypatch.setattr(metadata, "probe", no_probe)
    data = build({"type": "video_list", "annotations": str(ann)}, DATASETS)
    assert [i.num_frames for i in data.infos] == [20, 20, 20]


def test_video_list_of_frame_folders_reads_rawframes(format_roots):
    ann = format_roots["video_list"] / "rawframes.txt"
    data = build({"type": "video_list", "annotations": str(ann), "subset": "test",
                  "num_frames": 4, "stride": 2}, DATASETS)
    assert [i.num_frames for i in data.infos] == [6, 9]
    _check_item(data[1], frames=4, label=0)
    from tubelet.data.decode import read_image
    frames = sorted((ann.parent / "frames" / "clip1").iterdir())
    expected = read_image(frames[1]).permute(2, 0, 1).float() / 255  # centred: 1, 3, 5, 7
    assert torch.equal(data[1]["video"][:, 0], expected)
