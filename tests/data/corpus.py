"""A tiny corpus of real video files, one per container/codec case the decoder must get right,
and the reference every test compares with: a full sequential decode of the file.

Each case says how it is written: "pyav" (PyAV's bundled encoders, always available) or
"ffmpeg" (Debian's `ffmpeg` command, for what PyAV cannot write: XviD's packed B-frames, a
stream-copy cut with an edit list, an MPEG-TS with a start offset). Tests of an "ffmpeg" case
skip visibly when the command is missing.

The definition of a frame index (docs/datasets.md, "Decoding"): index k is the k-th frame, in
presentation order, that a full sequential decode of the file's best video stream yields, shown
as players show it (display matrix applied). `reference()` implements exactly that, on its
own, with PyAV and numpy only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

H, W = 48, 64


def pattern(i: int, height: int = H, width: int = W) -> np.ndarray:
    """Frame i: its number in binary as a 4x4 grid of blocks over a moving gradient, so every
    frame differs from every other one and a wrong frame cannot pass for the right one."""
    bits = np.array([(i >> b) & 1 for b in range(16)], dtype=np.float32).reshape(4, 4)
    grid = np.kron(bits, np.ones((-(-height // 4), -(-width // 4)), np.float32))[:height, :width]
    y, x = np.mgrid[:height, :width].astype(np.float32)
    rgb = np.stack([grid * 200 + 20, (x * 3 + 5 * i) % 64 + 96, (y * 3 + 7 * i) % 64], -1)
    return rgb.astype(np.uint8)


@dataclass(frozen=True)
class Case:
    container: str
    codec: str
    tool: str  # "pyav" or "ffmpeg": who writes it
    note: str
    write: Callable[[Path], None]


def _pyav(path: Path, codec: str, *, fmt: str | None = None, num_frames: int = 40,
          pts: list[int] | None = None, rate: int = 25, time_base: Fraction | None = None,
          pix_fmt: str = "yuv420p", size: tuple[int, int] = (H, W), options: dict | None = None,
          b_frames: int | None = None, rotation: int | None = None, audio_first: bool = False,
          extra_video: bool = False) -> None:
    """One video stream (two with `extra_video`), frames `pattern(i)` at timestamps `pts`."""
    height, width = size
    pts = list(range(num_frames)) if pts is None else pts
    with av.open(str(path), "w", format=fmt) as container:
        if audio_first:
            audio = container.add_stream("aac", rate=8000)
        if extra_video:  # a smaller, cheaper stream listed first: not the "best" one
            small = container.add_stream("libx264", rate=rate)
            small.width, small.height, small.pix_fmt = 32, 24, "yuv420p"
            small.options = {"threads": "1", "crf": "40"}
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base or Fraction(1, rate)
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        stream.options = {"threads": "1", **(options or {})}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        streams = [(small, 1000), (stream, 0)] if extra_video else [(stream, 0)]
        for k, t in enumerate(pts):
            for s, offset in streams:
                img = pattern(k + offset, s.height, s.width)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=s.pix_fmt)
                frame.pts = t
                container.mux(s.encode(frame))
            if audio_first and k == 0:  # the audio packet is muxed before any video
                samples = np.zeros((1, 1024), dtype=np.float32)
                aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = 8000, 0
                container.mux(audio.encode(aframe))
        for s, _ in streams:
            container.mux(s.encode())
        if audio_first:
            container.mux(audio.encode())


def _ffmpeg(path: Path, args: list[str], *, num_frames: int = 40, rate: int = 25,
            size: tuple[int, int] = (H, W)) -> None:
    """Pipe `pattern(i)` frames as raw RGB into the ffmpeg command line."""
    height, width = size
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate), "-i", "-",
           *args, str(path)]
    data = b"".join(pattern(i, height, width).tobytes() for i in range(num_frames))
    subprocess.run(cmd, input=data, check=True)


def _edit_list_cut(path: Path) -> None:
    """Stream-copy cut of an H.264 MP4 in the middle of a GOP: the muxer starts at the keyframe
    before the cut and writes an edit list that hides the frames before it."""
    source = path.with_name(path.stem + "_source.mp4")
    _ffmpeg(source, ["-c:v", "libx264", "-bf", "2", "-g", "12", "-keyint_min", "12",
                     "-sc_threshold", "0", "-threads", "1"], num_frames=60)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", "0.5",
                    "-i", str(source), "-c", "copy", "-t", "1.2", str(path)], check=True)
    source.unlink()


X264_B = {"bf": "2", "g": "12", "keyint_min": "12", "sc_threshold": "0"}

CASES: dict[str, Case] = {
    # Exact before this work; kept so.
    "h264.mp4": Case("mp4", "h264", "pyav", "B-frames, keyframe every 12",
                     lambda p: _pyav(p, "libx264", options=X264_B)),
    "h264_open_gop.mkv": Case("matroska", "h264", "pyav", "open GOP (x264 open-gop)",
                              lambda p: _pyav(p, "libx264", options={
                                  **X264_B, "x264-params": "open-gop=1"})),
    "hevc.mp4": Case("mp4", "hevc", "pyav", "B-frames",
                     lambda p: _pyav(p, "libx265", options={
                         "x265-params": "log-level=none:keyint=12:min-keyint=12:bframes=2"})),
    "vp8.webm": Case("webm", "vp8", "pyav", "", lambda p: _pyav(p, "libvpx",
                                                                options={"g": "12"})),
    "vp9.webm": Case("webm", "vp9", "pyav", "", lambda p: _pyav(p, "libvpx-vp9",
                                                                options={"g": "12"})),
    "mjpeg.mkv": Case("matroska", "mjpeg", "pyav", "every frame a keyframe",
                      lambda p: _pyav(p, "mjpeg", pix_fmt="yuvj420p")),
    "h264_10bit.mkv": Case("matroska", "h264", "pyav", "10-bit 4:2:0",
                           lambda p: _pyav(p, "libx264", pix_fmt="yuv420p10le", options=X264_B)),
    "vp9_odd_size.webm": Case("webm", "vp9", "pyav", "63x47 pixels",
                              lambda p: _pyav(p, "libvpx-vp9", size=(47, 63),
                                              options={"g": "12"})),
    "audio_first.mp4": Case("mp4", "h264", "pyav", "audio stream listed and muxed first",
                            lambda p: _pyav(p, "libx264", options=X264_B, audio_first=True)),
    "mpeg4.avi": Case("avi", "mpeg4", "pyav", "MPEG-4 Part 2, no B-frames: timestamps usable",
                      lambda p: _pyav(p, "mpeg4", fmt="avi", b_frames=0, options={"g": "12"})),
    # The cases of issue 9.
    "mpeg4_bframes.avi": Case("avi", "mpeg4", "pyav", "MPEG-4 Part 2, B-frames, not packed",
                              lambda p: _pyav(p, "mpeg4", fmt="avi", b_frames=2,
                                              options={"g": "12"})),
    "xvid_packed.avi": Case("avi", "mpeg4", "ffmpeg", "XviD, packed B-frames (DivX 'p')",
                            lambda p: _ffmpeg(p, ["-c:v", "libxvid", "-bf", "2", "-g", "12"])),
    "h264_bframes.avi": Case("avi", "h264", "pyav", "B-frames, no timestamps in AVI",
                             lambda p: _pyav(p, "libx264", fmt="avi", options=X264_B)),
    "vfr_dropped.mp4": Case("mp4", "h264", "pyav", "variable rate: frames dropped from 25 fps",
                            lambda p: _pyav(p, "libx264", options=X264_B, pts=[
                                t for t in range(60) if t % 5 not in (2, 3)])),
    "vfr_25to10.mkv": Case("matroska", "h264", "pyav", "variable rate: 25 fps then 10 fps",
                           lambda p: _pyav(p, "libx264", options=X264_B, rate=50,
                                           time_base=Fraction(1, 50),
                                           pts=[2 * t for t in range(25)] +
                                               [50 + 5 * t for t in range(20)])),
    "av1.mp4": Case("mp4", "av1", "pyav", "AV1 (SVT-AV1), decoded by libdav1d",
                    lambda p: _pyav(p, "libsvtav1", size=(64, 64), options={"g": "12"})),
    "edit_list_cut.mp4": Case("mp4", "h264", "ffmpeg", "stream-copy cut: edit list",
                              _edit_list_cut),
    "mpeg2.ts": Case("mpegts", "mpeg2video", "ffmpeg", "MPEG-2, B-frames, start time 10 s",
                     lambda p: _ffmpeg(p, ["-c:v", "mpeg2video", "-bf", "2", "-g", "12",
                                           "-output_ts_offset", "10"])),
    "rotated.mp4": Case("mp4", "h264", "pyav", "display matrix: rotate 90 degrees",
                        lambda p: _pyav(p, "libx264", options=X264_B, rotation=90)),
    "two_streams.mkv": Case("matroska", "h264", "pyav",
                            "two video streams; the best is the second", lambda p: _pyav(
                                p, "libx264", options=X264_B, extra_video=True)),
}


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def write_corpus(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the cases (all, or `names`) under `root`; an "ffmpeg" case is left out when the
    command is missing (its tests then skip and say why)."""
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
    out = {}
    for name in names or CASES:
        case = CASES[name]
        if case.tool == "ffmpeg" and not has_ffmpeg():
            continue
        path = root / name
        if not path.exists():
            case.write(path)
        out[name] = path
    return out


def reference(path: Path) -> np.ndarray:
    """Every frame of the best video stream, in the order a sequential decode yields them, as
    RGB (T, H, W, C), rotated as players rotate it (the display matrix's angle, counter-
    clockwise)."""
    with av.open(str(path)) as container:
        stream = container.streams.best("video")
        frames = []
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(np.rot90(rgb, k=(round(frame.rotation / 90)) % 4))
    return np.stack(frames)
