"""Video and image decoding: probe a file's metadata and decode a chosen set of frames.

One definition of a frame index, everywhere: index k is the k-th frame, in presentation order,
that a full sequential decode of the file's best video stream yields (the stream FFmpeg's
`av_find_best_stream` picks), shown as players show it (the display matrix's rotation applied).
`probe()` counts frames by that definition and every backend returns frames by it, or refuses
the file with a `DecodeError` that says why.

`decode_frames(path, indices, backend=..., info=...)` returns exactly the frames at `indices`,
as uint8 RGB (T, H, W, C). Backends: "pyav" (default, always installed), "torchcodec" and
"decord" (optional; see decode_optional.py). Every failure (missing, empty, truncated or
undecodable file, a frame the file does not have, a file a backend cannot decode exactly)
raises `DecodeError` with the path in its message, so a loader can count and report bad clips.

How the PyAV path stays exact and fast. `probe()` demuxes the packets once (no decoding,
except the first frame for its rotation and size) and records, in a few fixed-size scalars of
`VideoInfo`, how a frame's index can be found:
- "grid": every packet has a timestamp and the sorted timestamps sit on a constant-rate grid:
  index = round((pts - first_pts) * time_base * fps). Seek to the keyframe before the first
  wanted frame and decode forward to the last. Most MP4/MKV/WebM/TS files.
- "table": timestamps are trusted but the rate varies (phone video, concatenated segments):
  the decoder demuxes the packets again to list the timestamps in order (variable-length data
  is re-derived from the file, never stored), then seeks as above.
- "sequential": timestamps cannot be trusted (AVI with B-frames: AVI stores none, and the ones
  FFmpeg makes up follow decode order; packets without or with repeated timestamps): decode
  from the start and count frames as they come out. Exact by definition, slower.
After a seek, frames that come out before the first keyframe (an open GOP's leading frames,
decoded without their references) are never kept; when the seek lands after the first wanted
frame, or a frame's timestamp is off the grid/table, it decodes sequentially instead.
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


# VideoInfo.traits: bit flags found at probe time. They pick the PyAV path (see module
# docstring), tell an optional backend to refuse the file, and name the reason in reports.
UNTRUSTED_PTS = 1  # timestamps cannot map frames: decode sequentially
AVI_B_FRAMES = 2   # why UNTRUSTED_PTS, when it is this
VFR = 4            # variable frame rate: timestamps off a constant grid
EDIT_LIST = 8      # packets the container hides (MP4 edit list)
START_OFFSET = 16  # frame 0 is not at time 0 (MPEG-TS, cut files)
ROTATED = 32       # display matrix rotates the picture
MULTI_VIDEO = 64   # more than one video stream
OPEN_GOP = 128     # frames after a keyframe in decode order shown before it (leading frames)
DEEP_OR_ODD = 256  # more than 8 bits or an odd width/height: RGB conversions differ
TRAIT_NAMES = {UNTRUSTED_PTS: "timestamps not usable", AVI_B_FRAMES: "B-frames in AVI",
               VFR: "variable frame rate", EDIT_LIST: "edit list", START_OFFSET: "non-zero start",
               ROTATED: "rotated", MULTI_VIDEO: "several video streams", OPEN_GOP: "open GOP",
               DEEP_OR_ODD: "high bit depth or odd size"}
# Containers that store no presentation timestamps (FFmpeg makes them up in decode order) and
# codecs whose frames may be reordered (B-frames) or whose decoder honours skip_frame per packet.
NO_PTS_FORMATS = {"avi", "h264", "hevc", "m4v", "mpegvideo", "cavsvideo", "vc1"}
REORDERING_CODECS = {"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "vc1", "wmv3", "msmpeg4v3"}
# libdav1d reads skip_frame once when it opens, so NONREF there drops frames for good (AV1 and
# anything not listed is decoded in full).
SKIP_NONREF_CODECS = {"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "vp8", "vp9"}
B_PICTURE = 3  # AVPictureType AV_PICTURE_TYPE_B


@dataclass(frozen=True)
class VideoInfo:
    """What `probe()` learns, in fixed-size scalars (the metadata index stores one per video).
    height/width are as displayed (after rotation)."""
    num_frames: int
    fps: float
    height: int
    width: int
    stream: int = -1    # index of the chosen (best) video stream in the container; -1 unknown
    rotation: int = 0   # degrees counter-clockwise players turn the picture: 0, 90, 180, 270
    first_pts: int = 0  # timestamp of frame 0, in the stream's time base ("grid" files)
    traits: int = 0     # bit flags above

    @property
    def mode(self) -> str:
        """How the PyAV path finds a frame: "grid", "table" or "sequential"."""
        if self.traits & UNTRUSTED_PTS:
            return "sequential"
        return "table" if self.traits & VFR else "grid"

    def reasons(self) -> str:
        """The traits as words, e.g. "B-frames in AVI, rotated" ("" when none)."""
        return ", ".join(name for bit, name in TRAIT_NAMES.items() if self.traits & bit)


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


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike,
                  index: int = -1) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DecodeError(f"{os.fspath(path)}: no video stream")
    # The stream FFmpeg (and so decord, torchcodec and players) would pick when there are two.
    stream = container.streams[index] if index >= 0 else container.streams.best("video")
    # Loader workers already decode in parallel; codec threads would only oversubscribe the cores.
    stream.codec_context.thread_count = 1
    return stream


def _rate(stream: av.video.stream.VideoStream, path: str | os.PathLike) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise DecodeError(f"{os.fspath(path)}: unknown frame rate")
    return Fraction(rate)


def _index(pts: int, first_pts: int, scale: float) -> int:
    """A "grid" file's frame index; `scale` = time_base * fps, as a float, the same at probe
    and decode time so both round alike."""
    return round((pts - first_pts) * scale)


def _rotation(frame: av.VideoFrame, path: str | os.PathLike) -> int:
    angle = frame.rotation % 360
    if angle % 90:
        raise DecodeError(f"{os.fspath(path)}: rotation by {angle} degrees is not supported")
    return int(angle)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count (by the index definition above), rate, displayed size and how to seek:
    demuxes every packet once; decodes only the first frame, except where timestamps cannot be
    trusted (AVI with a codec that may use B-frames), where it decodes the stream to count."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            return _probe(container, stream, path)
        except av.FFmpegError as err:
            raise DecodeError(f"{os.fspath(path)}: cannot demux or decode: {err}") from err


def _probe(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
           path: str | os.PathLike) -> VideoInfo:
    codec = stream.codec_context
    decode_all = (container.format.name in NO_PTS_FORMATS and codec.name in REORDERING_CODECS)
    pts: list[int] = []
    num_packets = discarded = num_decoded = 0
    missing_pts = b_frames = open_gop = False
    first, key_pts = None, None
    for packet in container.demux(stream):
        if packet.size > 0:
            num_packets += 1
            if packet.is_discard:
                discarded += 1
            elif packet.pts is None:
                missing_pts = True
            else:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts = packet.pts
                elif key_pts is not None and packet.pts < key_pts:
                    open_gop = True
        if first is None or decode_all:
            for frame in codec.decode(packet):
                first = first or frame
                num_decoded += 1
                b_frames |= frame.pict_type == B_PICTURE
    if first is None:
        raise DecodeError(f"{os.fspath(path)}: no frames")
    rotation = _rotation(first, path)
    height, width = (first.width, first.height) if rotation % 180 else (first.height, first.width)
    traits = (ROTATED if rotation else 0) | (EDIT_LIST if discarded else 0)
    traits |= MULTI_VIDEO if len(container.streams.video) > 1 else 0
    traits |= OPEN_GOP if open_gop and not decode_all else 0
    deep = any(c.bits > 8 for c in first.format.components)
    traits |= DEEP_OR_ODD if deep or first.width % 2 or first.height % 2 else 0
    if decode_all and (b_frames or num_decoded != num_packets):
        traits |= UNTRUSTED_PTS | AVI_B_FRAMES
    elif missing_pts or len(set(pts)) != len(pts):
        traits |= UNTRUSTED_PTS
    rate = _rate(stream, path)
    if traits & UNTRUSTED_PTS:
        num_frames = num_decoded if decode_all else _count_frames(path, stream.index)
        return VideoInfo(num_frames=num_frames, fps=float(rate), height=height, width=width,
                         stream=stream.index, rotation=rotation, traits=traits)
    pts.sort()
    span = (pts[-1] - pts[0]) * stream.time_base
    fps = float((len(pts) - 1) / span) if span > 0 else float(rate)
    scale = float(stream.time_base) * fps
    if any(_index(p, pts[0], scale) != k for k, p in enumerate(pts)):
        traits |= VFR
    if pts[0] != 0 or (stream.start_time or 0) != 0:
        traits |= START_OFFSET
    return VideoInfo(num_frames=len(pts), fps=fps, height=height, width=width,
                     stream=stream.index, rotation=rotation, first_pts=pts[0], traits=traits)


def _count_frames(path: str | os.PathLike, index: int) -> int:
    with _open(path) as container:
        return sum(1 for _ in container.decode(_video_stream(container, path, index)))


def _check_indices(indices: Sequence[int]) -> list[int]:
    if len(indices) == 0:
        raise ValueError("decode_frames: indices is empty")
    if min(indices) < 0:
        raise ValueError(f"decode_frames: negative frame index {min(indices)}")
    return sorted(set(int(i) for i in indices))


def _check_range(path: str | os.PathLike, wanted: list[int], info: VideoInfo) -> None:
    if wanted[-1] >= info.num_frames:
        raise DecodeError(f"{os.fspath(path)}: frame {wanted[-1]} not found; the video has "
                          f"{info.num_frames} frames")


def decode_pyav(path: str | os.PathLike, indices: Sequence[int], *,
                info: VideoInfo | None = None) -> torch.Tensor:
    """Decode the frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C).
    `info` is the file's `probe()` (probed here when not given)."""
    wanted = _check_indices(indices)
    info = info if info is not None else probe(path)
    _check_range(path, wanted, info)
    try:
        frames = None
        if info.mode != "sequential":
            with _open(path) as container:
                frames = _decode_seeking(container, _video_stream(container, path, info.stream),
                                         wanted, info)
        if frames is None:  # no usable timestamps, or the seek could not be trusted
            with _open(path) as container:
                frames = _decode_sequential(container,
                                            _video_stream(container, path, info.stream),
                                            wanted, info)
    except av.FFmpegError as err:
        raise DecodeError(f"{os.fspath(path)}: cannot decode: {err}") from err
    missing = [i for i in wanted if i not in frames]
    if missing:
        # A file cut or damaged after it was probed, or a decoder that drops frames.
        raise DecodeError(f"{os.fspath(path)}: frame {missing[0]} not found; decoding stopped at "
                          f"frame {max(frames, default=-1)}")
    return torch.from_numpy(np.stack([frames[int(i)] for i in indices]))  # (T, H, W, C)


def _to_rgb(reformatter: VideoReformatter, frame: av.VideoFrame, rotation: int) -> np.ndarray:
    rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()  # (H, W, C)
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation else rgb


def _decode_sequential(container: av.container.InputContainer,
                       stream: av.video.stream.VideoStream, wanted: list[int],
                       info: VideoInfo) -> dict[int, np.ndarray]:
    """Decode from the start, counting frames as they come out: the definition itself."""
    keep, frames = set(wanted), {}
    reformatter = VideoReformatter()
    for index, frame in enumerate(container.decode(stream)):
        if index in keep:
            frames[index] = _to_rgb(reformatter, frame, info.rotation)
        if index >= wanted[-1]:
            break
    return frames


def _timestamps(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                info: VideoInfo) -> tuple[Callable[[int], int | None], list[int]]:
    """(pts -> frame index, None when not a frame of this file; a "table" file's timestamps in
    order, [] for "grid")."""
    if info.mode == "grid":
        scale = float(stream.time_base) * info.fps
        return (lambda pts: _index(pts, info.first_pts, scale)), []
    table = sorted(p.pts for p in container.demux(stream)
                   if p.size > 0 and not p.is_discard and p.pts is not None)
    positions = {pts: k for k, pts in enumerate(table)}
    return positions.get, table


def _decode_seeking(container: av.container.InputContainer,
                    stream: av.video.stream.VideoStream, wanted: list[int],
                    info: VideoInfo) -> dict[int, np.ndarray] | None:
    """Seek to the keyframe before wanted[0], decode forward to wanted[-1]; {index: (H,W,C)},
    or None when this cannot be trusted (the caller then decodes sequentially)."""
    index_of, table = _timestamps(container, stream, info)
    seek = wanted[0] > 0
    if table:
        if len(table) != info.num_frames:
            return None  # the file changed since it was probed
        # Listing the timestamps read the file to its end: go back to where we need to be.
        container.seek(table[wanted[0]], stream=stream, backward=True, any_frame=False)
        seek = True
    elif seek:
        # Aim half a frame early so rounding never lands the target after the frame we want.
        offset = math.floor((wanted[0] - 0.5) / info.fps / float(stream.time_base))
        container.seek(info.first_pts + offset, stream=stream, backward=True, any_frame=False)
    keep, frames = set(wanted), {}
    reformatter = VideoReformatter()
    codec = stream.codec_context
    skip_ok = codec.name in SKIP_NONREF_CODECS
    seen_key = not seek
    for packet in container.demux(stream):
        if skip_ok:
            # A packet whose frame we do not keep may be dropped by the decoder if no other
            # frame refers to it (B-frames): about half the frames of a typical H.264 file.
            index = index_of(packet.pts) if packet.pts is not None else None
            codec.skip_frame = "NONREF" if index is not None and index not in keep else "DEFAULT"
        for frame in codec.decode(packet):
            index = index_of(frame.pts) if frame.pts is not None else None
            if index is None:
                return None
            if not seen_key:
                # Frames before the first keyframe after a seek may lack their references (an
                # open GOP's leading frames): never keep them, and never start after wanted[0].
                if frame.key_frame and index <= wanted[0]:
                    seen_key = True
                elif index >= wanted[0]:
                    return None
                else:
                    continue
            if index in keep and index not in frames:
                frames[index] = _to_rgb(reformatter, frame, info.rotation)
            if index >= wanted[-1]:
                return frames
    # The stream ended first: a seek that landed badly (MPEG-TS seeks by bisecting the file),
    # or frames that are not there; the sequential decode tells which.
    return None


def _optional(name: str) -> Callable[..., torch.Tensor]:
    def decode(path: str | os.PathLike, indices: Sequence[int], *,
               info: VideoInfo | None = None) -> torch.Tensor:
        from tubelet.data import decode_optional  # imports the optional package
        return decode_optional.decode(name, path, indices, info=info)
    return decode


BACKENDS: dict[str, tuple[str | None, Callable[..., torch.Tensor]]] = {
    "pyav": (None, decode_pyav),
    "torchcodec": ("torchcodec", _optional("torchcodec")),
    "decord": ("decord", _optional("decord")),
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


def decode_frames(path: str | os.PathLike, indices: Sequence[int], *, backend: str = "pyav",
                  info: VideoInfo | None = None) -> torch.Tensor:
    """The frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C).
    `info`: the file's `probe()` from the metadata index (probed here when not given)."""
    return BACKENDS[backend][1](path, indices, info=info)


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
