"""Real video files for the data tests, written once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from data.index_video import write_index_video
from tubelet.data.synth import write_synthetic_dataset



@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> dict[str, Path]:
    """Index videos by name: gop 250 (one keyframe), gop 4 (seeks land mid-file), and an MKV
    (no frame count in the container)."""
    root = tmp_path_factory.mktemp("index_videos")
    return {"gop250": write_index_video(root / "gop250.mp4", gop=250),
            "gop4": write_index_video(root / "gop4.mp4", gop=4),
            "mkv": write_index_video(root / "gop4.mkv", gop=4, fmt="matroska")}


@pytest.fixture(scope="session")
def synth_params() -> dict[str, int]:
    """A small synthetic dataset: 2 classes x (3 train + 2 test) videos of 12 frames at 24x24."""
    return dict(num_classes=2, num_train_per_class=3, num_test_per_class=2, num_frames=12,
                size=24, fps=8, seed=0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory, synth_params) -> Path:
    root = tmp_path_factory.mktemp("synth") / "actions"
    write_synthetic_dataset(root, **synth_params)
    return root
