"""Video decoding with PyAV: probe a file's frame count and decode a chosen set of frames.

Every failure (missing, empty, truncated or undecodable file, or a frame the file does not have)
raises `DecodeError` with the path in its message, so a loader can count and report bad clips.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
import torch


class DecodeError(Exception):
    """A video could not be opened or decoded, or lacks a requested frame."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    # Checked up front because FFmpeg's messages for these cases are cryptic.
    if not os.path.isfile(path):
        raise DecodeError(f"{os.fspath(path)}: no such file")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{os.fspath(path)}: empty file")
    try:
        return av.open(os.fspath(path))
    except av.FFmpegError as err:
        raise DecodeError(f"{os.fspath(path)}: cannot open: {err}") from err


def _video_stream(container: av.container.InputContainer,
                  path: str | os.PathLike) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DecodeError(f"{os.fspath(path)}: no video stream")
    stream = container.streams.video[0]
    # Loader workers already decode in parallel; codec threads would only oversubscribe the cores.
    stream.codec_context.thread_count = 1
    return stream


def _fps(stream: av.video.stream.VideoStream, path: str | os.PathLike) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise DecodeError(f"{os.fspath(path)}: unknown frame rate")
    return Fraction(rate)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size from the container metadata (no decoding)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = _fps(stream, path)
        num_frames = stream.frames
        try:
            if num_frames == 0:
                # Some containers (e.g. AVI from some muxers, WebM) omit the count; packets are
                # one frame each for video, and demuxing without decoding is cheap.
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.FFmpegError as err:
            raise DecodeError(f"{os.fspath(path)}: cannot demux: {err}") from err
        height, width = stream.codec_context.height, stream.codec_context.width
    if num_frames <= 0:
        raise DecodeError(f"{os.fspath(path)}: no frames")
    return VideoInfo(num_frames=num_frames, fps=float(fps), height=height, width=width)


def decode_frames(path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    """Decode the frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C)."""
    if len(indices) == 0:
        raise ValueError("decode_frames: indices is empty")
    if min(indices) < 0:
        raise ValueError(f"decode_frames: negative frame index {min(indices)}")
    wanted = sorted(set(int(i) for i in indices))
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            frames = _decode_sorted(container, stream, wanted, path, seek=wanted[0] > 0)
        except av.FFmpegError as err:
            raise DecodeError(f"{os.fspath(path)}: cannot decode: {err}") from err
    missing = [i for i in wanted if i not in frames]
    if missing:
        # Usually an index past the real end: container metadata can overstate the frame count.
        raise DecodeError(f"{os.fspath(path)}: frame {missing[0]} not found; decoding stopped at "
                          f"frame {max(frames, default=-1)}")
    return torch.from_numpy(np.stack([frames[int(i)] for i in indices]))  # (T, H, W, C)


def _decode_sorted(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   wanted: list[int], path: str | os.PathLike, *,
                   seek: bool) -> dict[int, np.ndarray]:
    """Decode forward from the keyframe before wanted[0] up to wanted[-1]; {index: (H, W, C)}."""
    fps = _fps(stream, path)
    time_base = stream.time_base
    start_pts = stream.start_time or 0
    if seek:
        # Aim half a frame early so rounding never lands the target after the frame we want.
        target = start_pts + math.floor((wanted[0] - Fraction(1, 2)) / fps / time_base)
        container.seek(max(target, start_pts), stream=stream, backward=True, any_frame=False)
    keep = set(wanted)
    frames: dict[int, np.ndarray] = {}
    first = True
    for frame in container.decode(stream):
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise DecodeError(f"{os.fspath(path)}: frame without a timestamp")
        # Index from the timestamp, not a counter: after a seek we do not know where we landed.
        index = round((pts - start_pts) * time_base * fps)
        if first and seek and index > wanted[0]:
            # The seek overshot (bad index in the file); decoding from the start is always right.
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
            return _decode_sorted(container, stream, wanted, path, seek=False)
        first = False
        if index in keep and index not in frames:
            frames[index] = frame.to_ndarray(format="rgb24")  # (H, W, C)
        if index >= wanted[-1]:
            break
    return frames
