"""Test videos whose frames carry their own index, so a test can read back which frame it got.

A module rather than conftest.py contents: tests import from it, and importing from a conftest
is fragile once several exist."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

NUM_INDEX_FRAMES = 30  # frame i is filled with grey level 8 * i, so 30 frames stay below 255
INDEX_SIZE = 32


def write_index_video(path: Path, *, num_frames: int = NUM_INDEX_FRAMES, gop: int, fmt: str = "mp4",
                      fps: int = 8) -> Path:
    """An H.264 video whose frame i is a flat grey of level 8 * i: robust to compression, and
    `frame_ids` reads the index back. The default preset uses B-frames, so decode order differs
    from presentation order."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = INDEX_SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"threads": "1", "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(num_frames):
            rgb = np.full((INDEX_SIZE, INDEX_SIZE, 3), 8 * i, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def frame_ids(video) -> list[int]:
    """The index written into each frame of a decoded (T, H, W, C) clip."""
    return [round(float(frame.float().mean()) / 8) for frame in video]


CODED_SIZE, CODED_BITS = 64, 16  # a 4x4 grid of 16x16 blocks, one bit each


def write_coded_video(path: Path, *, num_frames: int, gop: int, fps: int = 30) -> Path:
    """A longer H.264 video whose frame i shows i in binary (a white block per set bit), so
    frames past 30 can be identified; B-frames on, fixed keyframe interval `gop`."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = CODED_SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"threads": "1", "keyint_min": str(gop), "sc_threshold": "0",
                          "preset": "veryfast"}
        for i in range(num_frames):
            bits = [(i >> b) & 1 for b in range(CODED_BITS)]
            grid = np.array(bits, dtype=np.uint8).reshape(4, 4) * 219 + 16
            rgb = np.repeat(np.repeat(grid, 16, 0), 16, 1)[..., None].repeat(3, 2)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def coded_ids(video) -> list[int]:
    """The number written into each frame of a decoded (T, H, W, C) clip."""
    blocks = video.float().mean(-1).reshape(len(video), 4, 16, 4, 16).mean((2, 4))  # (T,4,4)
    bits = (blocks.reshape(len(video), CODED_BITS) > 128).long()
    return (bits * (2 ** torch.arange(CODED_BITS))).sum(1).tolist()
