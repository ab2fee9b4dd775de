import json

import numpy as np
import pytest

from tubelet.data.decode import decode_frames, probe
from tubelet.data.synth import (ensure_synthetic_dataset, motion_classes, render_video,
                                write_synthetic_dataset)
from tubelet.registry import ConfigError


def test_motion_classes():
    names = [name for name, _ in motion_classes(8)]
    assert names[:4] == ["move_right_slow", "move_right_fast", "move_left_slow", "move_left_fast"]
    assert len(set(names)) == 8 and len(set(v for _, v in motion_classes(8))) == 8
    assert [name for name, _ in motion_classes(2)] == ["move_right", "move_left"]
    assert [len(motion_classes(n)) for n in (3, 4, 16)] == [3, 4, 16]
    for bad in (1, 9 * 2, 11):
        with pytest.raises(ValueError, match="num_classes"):
            motion_classes(bad)


def test_layout(synth_root, synth_params):
    classes = ["move_left", "move_right"]
    assert sorted(p.name for p in (synth_root / "videos").iterdir()) == classes
    assert json.loads((synth_root / "synth.json").read_text()) == {"version": 1, **synth_params}
    for k, name in enumerate(["move_right", "move_left"]):
        lines = (synth_root / "splits" / f"{name}_test_split1.txt").read_text().splitlines()
        assert lines == [f"c{k}_v{i:04d}.mp4 {1 if i < 3 else 2}" for i in range(5)]
        for line in lines:
            info = probe(synth_root / "videos" / name / line.split()[0])
            assert (info.num_frames, info.height, info.width, info.fps) == (12, 24, 24, 8.0)
    # the temporary directory was renamed away, not left behind
    assert [p.name for p in synth_root.parent.iterdir()] == ["actions"]


def test_generation_is_deterministic_and_seeded(synth_root, synth_params, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    write_synthetic_dataset(again, **synth_params)
    write_synthetic_dataset(other, **{**synth_params, "seed": 1})
    videos = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*.mp4"))
    assert len(videos) == 10
    for video in videos:
        assert (again / video).read_bytes() == (synth_root / video).read_bytes()
        assert (other / video).read_bytes() != (synth_root / video).read_bytes()


def test_train_and_test_videos_differ(synth_root):
    class_dir = synth_root / "videos" / "move_left"
    frames = [decode_frames(class_dir / f"c1_v{i:04d}.mp4", [0]) for i in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.array_equal(frames[i].numpy(), frames[j].numpy())


def test_appearance_does_not_depend_on_class():
    # The same random stream with another velocity draws the same scene: only the motion differs.
    a = render_video(np.random.default_rng(5), velocity=(0, 3), num_frames=6, size=24)
    b = render_video(np.random.default_rng(5), velocity=(-1, 0), num_frames=6, size=24)
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[5], b[5])


def test_ensure_is_idempotent_and_checks_parameters(synth_root, synth_params):
    before = {p: p.stat().st_mtime_ns for p in synth_root.rglob("*")}
    assert ensure_synthetic_dataset(synth_root, **synth_params) == synth_root
    assert {p: p.stat().st_mtime_ns for p in synth_root.rglob("*")} == before
    with pytest.raises(ValueError, match="actions"):
        ensure_synthetic_dataset(synth_root, **{**synth_params, "size": 32})


def test_ensure_generates_when_missing(tmp_path, synth_params):
    root = ensure_synthetic_dataset(tmp_path / "new", **{**synth_params, "num_test_per_class": 0})
    assert len(list(root.rglob("*.mp4"))) == 6


def test_refuses_a_non_empty_root_and_bad_parameters(tmp_path, synth_params):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        write_synthetic_dataset(tmp_path / "busy", **synth_params)
    with pytest.raises(FileExistsError, match="busy"):
        ensure_synthetic_dataset(tmp_path / "busy", **synth_params)
    with pytest.raises(ConfigError, match="size"):
        write_synthetic_dataset(tmp_path / "odd", **{**synth_params, "size": 25})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
