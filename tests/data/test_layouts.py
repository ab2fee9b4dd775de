"""`tubelet data synth --layout`: each seed dataset's real layout and container, read back by
our reader for that format. The files are written with PyAV only (its encoders: mpeg4,
libvpx-vp9, libx264, mjpeg), as a user without the ffmpeg CLI would."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest

import tubelet.data.datasets  # noqa: F401  (registers the formats)
from conftest import LAYOUT_PARAMS, run_tubelet
from tubelet.data.synth_layouts import LAYOUTS, ensure_layout
from tubelet.registry import DATASETS, ConfigError, build

NUM_CLASSES = LAYOUT_PARAMS["num_classes"]
TRAIN = NUM_CLASSES * LAYOUT_PARAMS["num_train_per_class"]
TEST = NUM_CLASSES * LAYOUT_PARAMS["num_test_per_class"]


def _stream(path):
    """(container format, codec, pict types in decode order) of a video file."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        # AVPictureType: 1 I, 2 P, 3 B (this PyAV gives the int, newer ones an enum)
        types = ["?IPB"[int(frame.pict_type)] for frame in c.decode(s)]
        return c.format.name, s.codec_context.name, types


def _reader(node):
    return build({"num_frames": 4, "stride": 1, **node}, DATASETS)


def test_hmdb51_layout_is_mpeg4_avi_with_b_frames(layout_root):
    root = layout_root("hmdb51")
    videos = sorted((root / "videos").rglob("*.avi"))
    split_files = list((root / "splits").glob("*_test_split*.txt"))
    assert len(videos) == TRAIN + TEST and len(split_files) == 3 * NUM_CLASSES
    fmt, codec, types = _stream(videos[0])
    assert (fmt, codec) == ("avi", "mpeg4") and "B" in types and len(types) == 8
    for split in (1, 2, 3):
        train = _reader({"type": "hmdb51", "root": str(root), "split": split})
        test = _reader({"type": "hmdb51", "root": str(root), "split": split, "subset": "test"})
        assert (len(train), len(test), train.num_classes) == (TRAIN, TEST, NUM_CLASSES)
        assert not train.bad and not test.bad
        assert not {s.path for s in train.samples} & {s.path for s in test.samples}
    line = (root / "splits" / f"{train.classes[0]}_test_split1.txt").read_text().splitlines()[0]
    assert line.endswith(".avi 1 ")  # as the originals: "<name>.avi 1 "


def test_ucf101_layout_names_lists_and_container(layout_root):
    root = layout_root("ucf101")
    lists = root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text().splitlines()[0] == "1 MoveRightSlow"
    first_train = (lists / "trainlist01.txt").read_bytes().split(b"\r\n")[0]
    assert first_train == b"MoveRightSlow/v_MoveRightSlow_g03_c01.avi 1"  # CRLF, as shipped
    assert (lists / "testlist01.txt").read_text().splitlines()[0] == \
        "MoveRightSlow/v_MoveRightSlow_g01_c01.avi"
    fmt, codec, types = _stream(root / "UCF-101/MoveRightSlow/v_MoveRightSlow_g01_c01.avi")
    assert (fmt, codec) == ("avi", "mpeg4") and "B" in types
    train = _reader({"type": "ucf101", "root": str(root)})
    test = _reader({"type": "ucf101", "root": str(root), "subset": "test"})
    assert (len(train), len(test)) == (TRAIN, TEST) and not train.bad and not test.bad
    assert sorted({s.target for s in test.samples}) == list(range(NUM_CLASSES))


def test_kinetics_layout_csvs_clip_names_and_unlabelled_test(layout_root):
    root = layout_root("kinetics")
    header = (root / "test.csv").read_text().splitlines()[0]
    assert header == "youtube_id,time_start,time_end,split"  # Kinetics-600/700's test CSV
    train = _reader({"type": "kinetics", "annotations": str(root / "train.csv"),
                     "root": str(root / "videos")})
    val = _reader({"type": "kinetics", "annotations": str(root / "val.csv"),
                   "root": str(root / "videos"), "subset": "test",
                   "classes_from": str(root / "train.csv")})
    test = _reader({"type": "kinetics", "annotations": str(root / "test.csv"),
                    "root": str(root / "videos"), "subset": "test",
                    "classes_from": str(root / "train.csv")})
    assert train.classes == ["move left fast", "move left slow", "move right fast",
                             "move right slow"]
    assert (len(train), len(val), len(test)) == (TRAIN, TEST, TEST)
    assert not (train.bad or val.bad or test.bad) and not test.labelled
    path = train.samples[0].path
    assert path.parent.name in train.classes  # crawler layout for train, flat for val/test
    assert val.samples[0].path.parent == root / "videos"
    yid, start, end = path.stem[:11], path.stem[12:18], path.stem[19:]
    assert len(path.stem) == 11 + 14 and int(end) - int(start) == 10 and yid
    assert _stream(path)[:2] == ("mov,mp4,m4a,3gp,3g2,mj2", "h264")
    assert "label" not in test[0]


def test_ssv2_layout_json_and_vp9_webm(layout_root):
    root = layout_root("ssv2")
    labels = json.loads((root / "labels/labels.json").read_text())
    assert sorted(labels.values(), key=int) == [str(k) for k in range(NUM_CLASSES)]
    assert json.loads((root / "labels/test.json").read_text())[0].keys() == {"id"}
    item = json.loads((root / "labels/train.json").read_text())[0]
    assert item.keys() == {"id", "label", "template", "placeholders"}
    assert _stream(root / "videos" / f"{item['id']}.webm")[:2] == ("matroska,webm", "vp9")
    common = {"labels": str(root / "labels/labels.json"), "root": str(root / "videos")}
    train = _reader({"type": "ssv2", "annotations": str(root / "labels/train.json"), **common})
    val = _reader({"type": "ssv2", "annotations": str(root / "labels/validation.json"),
                   "subset": "test", **common})
    test = _reader({"type": "ssv2", "annotations": str(root / "labels/test.json"),
                    "subset": "test", **common})
    assert (len(train), len(val), len(test)) == (TRAIN, TEST, TEST)
    assert train.labelled and val.labelled and not test.labelled
    assert not (train.bad or val.bad or test.bad)


def test_gaze360_layout_frames_and_annotations(layout_root):
    root = layout_root("gaze360")
    line = (root / "train.txt").read_text().splitlines()[0].split()
    assert line[0].startswith("rec_000/head/000000/") and line[0].endswith(".jpg")
    assert np.linalg.norm([float(v) for v in line[1:]]) == pytest.approx(1, abs=1e-5)
    assert _stream(root / "imgs" / line[0])[1] == "mjpeg"
    frames = LAYOUT_PARAMS["num_frames"]
    for txt, count in (("train", TRAIN), ("validation", TEST), ("test", TEST)):
        data = build({"type": "gaze360", "annotations": str(root / f"{txt}.txt"),
                      "root": str(root / "imgs"), "num_frames": 3}, DATASETS)
        assert len(data) == count * frames and not data.bad
    item = data[0]
    assert item["video"].shape == (3, 3, 32, 32) and item["target"].shape == (3,)


def test_ava_features_layout(layout_root):
    root = layout_root("ava-features")
    for split, count in (("train", TRAIN), ("test", TEST)):
        data = build({"type": "features", "path": str(root / f"clip_vit_l14_{split}.npz")},
                     DATASETS)
        assert len(data) == count and data.target_key == "target"
        assert data.features.shape == (count, 768) and data.features.dtype == np.float32
        targets = data.targets.numpy()
        assert targets.min() >= 1 and targets.max() <= 10 and targets.std() > 0.1


def test_layouts_are_deterministic_and_parameters_are_checked(layout_root, tmp_path):
    for layout in ("ucf101", "ssv2"):  # the AVI and the VP9 encoders
        again = ensure_layout(tmp_path / layout, layout=layout, **LAYOUT_PARAMS)
        first = layout_root(layout)
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file()
                       and not p.name.startswith("tubelet_index"))
        assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
        for f in files:
            assert (first / f).read_bytes() == (again / f).read_bytes(), f
    with pytest.raises(ConfigError, match=r"other parameters .*'seed': \(0, 1\)"):
        ensure_layout(tmp_path / "ucf101", layout="ucf101", **{**LAYOUT_PARAMS, "seed": 1})
    with pytest.raises(ConfigError, match=r"layout: unknown 'ucf', expected one of .*ucf101"):
        ensure_layout(tmp_path / "x", layout="ucf")
    assert set(LAYOUTS) == {"hmdb51", "ucf101", "kinetics", "ssv2", "gaze360", "ava-features",
                            "multilabel"}


def test_cli_writes_a_layout(tmp_path):
    proc = run_tubelet("data", "synth", str(tmp_path / "k"), "--layout", "kinetics",
                       "--num-classes", "4", "--num-train-per-class", "1",
                       "--num-test-per-class", "1", "--size", "16", cwd=tmp_path)
    assert "kinetics" in proc.stdout and (tmp_path / "k" / "test.csv").is_file()
    assert len(list((tmp_path / "k" / "videos").rglob("*.mp4"))) == 4 * 3
    # (an unknown layout is a ConfigError, so exit 2: test_layouts_are_deterministic_and_...)
