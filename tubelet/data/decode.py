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
from typing import Callable, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from tubelet.data.video_probe import (  # noqa: F401  (re-exported: the public names live here)
    AVI_B_FRAMES, DEEP_OR_ODD, EDIT_LIST, MULTI_VIDEO, NON_IDR_KEYS, OPEN_GOP, ROTATED,
    SKIP_NONREF_CODECS, START_OFFSET, TRAIT_NAMES, UNTRUSTED_PTS, VFR, DecodeError, VideoInfo,
    _index, _open, _video_stream, probe)
from tubelet.registry import ConfigError, did_you_mean


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
