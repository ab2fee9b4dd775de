"""Video and image decoding: probe a file's metadata and decode a chosen set of frames.

`decode_frames(path, indices, backend=...)` returns exactly the frames at `indices`, as uint8
RGB (T, H, W, C). Backends: "pyav" (default, always installed), "torchcodec" and "decord" (when
installed). Every failure (missing, empty, truncated or undecodable file, or a frame the file
does not have) raises `DecodeError` with the path in its message, so a loader can count and
report bad clips.

The PyAV path seeks to the keyframe before the first wanted frame, decodes forward only to the
last wanted frame, and converts only the kept frames to RGB with one reused swscale context
(`frame.to_ndarray(format=...)` builds a new one per frame, which costs more than decoding
small frames).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from tubelet.registry import ConfigError, did_you_mean


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


def _check_indices(indices: Sequence[int]) -> list[int]:
    if len(indices) == 0:
        raise ValueError("decode_frames: indices is empty")
    if min(indices) < 0:
        raise ValueError(f"decode_frames: negative frame index {min(indices)}")
    return sorted(set(int(i) for i in indices))


def decode_pyav(path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    """Decode the frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C)."""
    wanted = _check_indices(indices)
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
    reformatter = VideoReformatter()
    codec = stream.codec_context
    first = True
    for packet in container.demux(stream):
        # A packet whose frame we do not keep may be dropped by the decoder if no other frame
        # refers to it (B-frames): about half the frames of a typical H.264 file.
        skip = packet.pts is not None and _index(packet.pts, start_pts, time_base, fps) not in keep
        codec.skip_frame = "NONREF" if skip else "DEFAULT"
        for frame in codec.decode(packet):
            pts = frame.pts if frame.pts is not None else frame.dts
            if pts is None:
                raise DecodeError(f"{os.fspath(path)}: frame without a timestamp")
            # Index from the timestamp, not a counter: after a seek we do not know where we are.
            index = _index(pts, start_pts, time_base, fps)
            if first and seek and index > wanted[0]:
                # The seek overshot (a broken index in the file). The only backward seek we
                # ever make: back to the start, from where decoding forward is always right.
                codec.flush_buffers()
                container.seek(start_pts, stream=stream, backward=True, any_frame=False)
                return _decode_sorted(container, stream, wanted, path, seek=False)
            first = False
            if index in keep and index not in frames:
                frames[index] = reformatter.reformat(frame, format="rgb24").to_ndarray()  # (H,W,C)
            if index >= wanted[-1]:
                return frames
    return frames


def _index(pts: int, start_pts: int, time_base: Fraction, fps: Fraction) -> int:
    return round((pts - start_pts) * time_base * fps)


def decode_torchcodec(path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    """Decode the frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C)."""
    from torchcodec.decoders import VideoDecoder  # optional extra
    _check_indices(indices)  # torchcodec would read a negative index from the end
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise DecodeError(f"{os.fspath(path)}: no such file or empty")
    try:
        # "approximate" maps an index to a timestamp by the header's frame rate, as decode_pyav
        # does, at no cost on open. "exact" first demuxes the whole file to list every frame: up
        # to 1.35x more clips/s on the benchmark's 5-10 s videos (with B-frames, approximate mode
        # re-decodes a GOP for frames just before a keyframe), but 3.7x fewer on a 10-minute one.
        decoder = VideoDecoder(os.fspath(path), seek_mode="approximate", dimension_order="NHWC",
                               num_ffmpeg_threads=1)  # workers already run in parallel
        # One batch call: torchcodec sorts the indices, decodes them going forward, copies
        # repeats, and returns them in the order asked for.
        return decoder.get_frames_at([int(i) for i in indices]).data  # (T, H, W, C)
    except (RuntimeError, ValueError, IndexError) as err:
        raise DecodeError(f"{os.fspath(path)}: {err}") from err


def decode_decord(path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    import decord  # optional extra
    _check_indices(indices)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise DecodeError(f"{os.fspath(path)}: no such file or empty")
    try:
        reader = decord.VideoReader(os.fspath(path), num_threads=1)
        if max(indices) >= len(reader):
            raise DecodeError(f"{os.fspath(path)}: frame {max(indices)} not found; the video "
                              f"has {len(reader)} frames")
        return torch.from_numpy(reader.get_batch(list(indices)).asnumpy())  # (T, H, W, C)
    except (decord.DECORDError, RuntimeError) as err:  # an unopenable file is a RuntimeError
        raise DecodeError(f"{os.fspath(path)}: {err}") from err


BACKENDS: dict[str, tuple[str | None, Callable[..., torch.Tensor]]] = {
    "pyav": (None, decode_pyav),
    "torchcodec": ("torchcodec", decode_torchcodec),
    "decord": ("decord", decode_decord),
}


def check_backend(name: str) -> None:
    """ConfigError unless backend `name` exists and its package imports."""
    if name not in BACKENDS:
        raise ConfigError(f"backend: unknown decode backend {name!r}"
                          f"{did_you_mean(name, BACKENDS)}")
    module = BACKENDS[name][0]
    if module is not None and not backend_available(name):
        raise ConfigError(f"backend: {name!r} is not installed or does not load "
                          f"(pip install 'tubelet[{module}]')")


def backend_available(name: str) -> bool:
    module = BACKENDS[name][0]
    if module is None:
        return True
    try:
        __import__(module)
        if module == "torchcodec":
            import torchcodec.decoders  # noqa: F401  (loads the FFmpeg libraries)
        return True
    except Exception:  # noqa: BLE001 - a broken native install raises OSError/RuntimeError
        return False


def decode_frames(path: str | os.PathLike, indices: Sequence[int], *,
                  backend: str = "pyav") -> torch.Tensor:
    """The frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C)."""
    return BACKENDS[backend][1](path, indices)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """One JPEG/PNG/... image as uint8 RGB (H, W, C), decoded by FFmpeg through PyAV."""
    with _open(path) as container:
        try:
            frame = next(container.decode(video=0))
        except (av.FFmpegError, StopIteration) as err:
            raise DecodeError(f"{os.fspath(path)}: cannot decode image: {err}") from err
    return torch.from_numpy(frame.to_ndarray(format="rgb24"))


def read_images(paths: Sequence[str | os.PathLike]) -> torch.Tensor:
    """The frame-folder backend: images as one clip, uint8 (T, H, W, C); sizes must agree."""
    frames = [read_image(p) for p in paths]
    if len({f.shape for f in frames}) != 1:
        raise DecodeError(f"{os.fspath(paths[0])}: frames of one clip differ in size "
                          f"{sorted({tuple(f.shape) for f in frames})}")
    return torch.stack(frames)
