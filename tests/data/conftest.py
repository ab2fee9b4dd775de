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


@pytest.fixture(scope="session")
def coded_videos(tmp_path_factory) -> dict[int, Path]:
    """300-frame videos numbered in their pixels, keyframe interval 250 and 16."""
    from data.index_video import write_coded_video
    root = tmp_path_factory.mktemp("coded_videos")
    return {gop: write_coded_video(root / f"gop{gop}.mp4", num_frames=300, gop=gop)
            for gop in (250, 16)}


@pytest.fixture(scope="session")
def format_roots(tmp_path_factory) -> dict[str, Path]:
    """Every annotation format's fixture files next to real media (see data/media.py)."""
    from data.media import build_format_roots
    return build_format_roots(tmp_path_factory.mktemp("formats"))
