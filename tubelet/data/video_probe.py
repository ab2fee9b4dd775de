"""Probe a video file: frame count by the one definition of a frame index (see decode.py),
rate, displayed size, and how the PyAV path can find a frame, in a few fixed-size scalars
(`VideoInfo`, one per video in the metadata index). Demuxes every packet once, without decoding
(except the first frame, for rotation and size, and AVI files whose timestamps cannot be
trusted, which are decoded once to count their frames).

The metadata index caches these results while a file's size and mtime are unchanged: a change to
what probe() finds or records must bump metadata.INDEX_VERSION, or old entries keep old traits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import av

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
NON_IDR_KEYS = 512  # H.264 keyframes that are not IDR pictures (x264 open-gop=1)
TRAIT_NAMES = {UNTRUSTED_PTS: "timestamps not usable", AVI_B_FRAMES: "B-frames in AVI",
               VFR: "variable frame rate", EDIT_LIST: "edit list", START_OFFSET: "non-zero start",
               ROTATED: "rotated", MULTI_VIDEO: "several video streams", OPEN_GOP: "open GOP",
               DEEP_OR_ODD: "high bit depth or odd size",
               NON_IDR_KEYS: "H.264 keyframes without IDR"}
# Containers that store no presentation timestamps (FFmpeg makes them up in decode order) and
# codecs whose frames may be reordered (B-frames) or whose decoder honours skip_frame per packet.
NO_PTS_FORMATS = {"avi", "h264", "hevc", "m4v", "mpegvideo", "cavsvideo", "vc1"}
REORDERING_CODECS = {"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "vc1", "wmv3",
                     "msmpeg4v3"}
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
    missing_pts = b_frames = open_gop = non_idr = False
    first, key_pts = None, None
    extradata = codec.extradata or b""
    # avcC (MP4, MKV): NAL units prefixed by their length; else Annex B start codes.
    nal_size = (extradata[4] & 3) + 1 if extradata[:1] == b"\x01" and len(extradata) > 4 else 0
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
                    non_idr |= codec.name == "h264" and not _h264_idr(bytes(packet), nal_size)
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
    traits |= NON_IDR_KEYS if non_idr else 0
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


def _h264_idr(data: bytes, nal_size: int) -> bool:
    """Whether an H.264 keyframe packet holds an IDR picture (NAL type 5). A keyframe that does
    not (x264's open-gop=1: an I picture with a recovery point) lets frames after it refer to
    frames before it; decoders seeking to it may drop or miss frames."""
    types = []
    if nal_size:
        i = 0
        while i + nal_size < len(data):
            types.append(data[i + nal_size] & 0x1F)
            i += nal_size + int.from_bytes(data[i:i + nal_size], "big")
    else:
        i = data.find(b"\x00\x00\x01")
        while 0 <= i < len(data) - 3:
            types.append(data[i + 3] & 0x1F)
            i = data.find(b"\x00\x00\x01", i + 3)
    return 5 in types or not types  # no NAL found: not H.264 as we know it, do not judge


def _count_frames(path: str | os.PathLike, index: int) -> int:
    with _open(path) as container:
        return sum(1 for _ in container.decode(_video_stream(container, path, index)))
