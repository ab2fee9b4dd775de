"""Writers for the real media files behind the annotation fixtures in tests/data/fixtures/:
MP4 (H.264), AVI (MPEG-4 Part 2, as UCF101 ships), WebM (VP9, as SSv2 ships) and JPEG frames."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
CODECS = {".mp4": ("mp4", "libx264", "yuv420p"), ".avi": ("avi", "mpeg4", "yuv420p"),
          ".webm": ("webm", "libvpx-vp9", "yuv420p")}


def write_video(path: Path, *, num_frames: int = 12, height: int = 24, width: int = 32,
                seed: int = 0, fps: int = 8) -> Path:
    fmt, codec, pix_fmt = CODECS[path.suffix]
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"threads": "1"} if codec == "libx264" else {}
        for i in range(num_frames):
            rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_jpeg(path: Path, *, height: int = 24, width: int = 32, seed: int = 0) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def build_format_roots(tmp: Path) -> dict[str, Path]:
    """Copy the annotation fixtures under `tmp` and write the media they list."""
    roots = {name: Path(shutil.copytree(FIXTURES / name, tmp / name))
             for name in ("ucf101", "kinetics", "ssv2", "gaze360", "video_list")}
    for k, line in enumerate((roots["ucf101"] / "ucfTrainTestlist" / "trainlist01.txt")
                             .read_text().split("\n") +
                             (roots["ucf101"] / "ucfTrainTestlist" / "testlist01.txt")
                             .read_text().split("\n")):
        if line.strip():
            write_video(roots["ucf101"] / "UCF-101" / line.split()[0], seed=k)
    for k, (csv_name, nested) in enumerate((("train.csv", True), ("validate.csv", False))):
        for row in (roots["kinetics"] / csv_name).read_text().splitlines()[1:]:
            label, yid, start, end, _ = row.split(",")
            name = f"{yid}_{int(start):06d}_{int(end):06d}.mp4"
            write_video(roots["kinetics"] / "videos" / (label if nested else "") / name, seed=k)
    for vid in ("78687", "42326", "100904", "74225"):
        write_video(roots["ssv2"] / "videos" / f"{vid}.webm", num_frames=10, seed=int(vid))
    for number in range(129, 135):  # 128 and 135 missing: the windows' edge frames
        write_jpeg(roots["gaze360"] / "imgs/rec_022/head/000000" / f"{number:06d}.jpg", seed=number)
    write_jpeg(roots["gaze360"] / "imgs/rec_022/head/000001/000005.jpg", seed=5)
    for k, name in enumerate(("a.mp4", "b c.mp4", "d.mp4")):
        write_video(roots["video_list"] / "clips" / name, num_frames=20, seed=k)
    for clip, count in (("clip0", 6), ("clip1", 9)):  # rawframes: img_00001.jpg, ...
        for i in range(count):
            write_jpeg(roots["video_list"] / "frames" / clip / f"img_{i + 1:05d}.jpg", seed=i)
    for k, (cls, count) in enumerate((("cat", 3), ("dog", 2))):
        for i in range(count):
            write_jpeg(tmp / "images" / cls / f"{i}.jpg", height=20, width=30, seed=10 * k + i)
    roots["image_folder"] = tmp / "images"
    return roots
