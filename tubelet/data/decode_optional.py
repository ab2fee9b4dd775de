"""The optional decode backends, torchcodec and decord, held to PyAV's definition of a frame
index (see decode.py): same stream, same rotation, same indices, or a `DecodeError` that says
why the file is refused.

Which files each refuses was measured on the corpus in tests/data/corpus.py (every index alone
and in clips against a full sequential decode): a trait listed in REFUSE made that backend
return other frames than the definition, or fail, on a file that has it.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from tubelet.data.decode import (AVI_B_FRAMES, DEEP_OR_ODD, EDIT_LIST, NON_IDR_KEYS, OPEN_GOP,
                                 ROTATED, START_OFFSET, UNTRUSTED_PTS, VFR, DecodeError, VideoInfo,
                                 _check_indices, _check_range, probe)

# Measured with torchcodec 0.12.0 on FFmpeg 5.1 and decord 0.6.0 (tests/data/test_backends.py).
# Both pick FFmpeg's best stream, as PyAV here does; torchcodec is told it anyway.
REFUSE = {
    # Wrong frames: AVI B-frames (decode-order timestamps), MPEG-TS start offset; RGB differs
    # by up to 47/255 on 10-bit and odd-sized frames (another conversion).
    # After a seek to an H.264 keyframe that is not an IDR picture, a frame is missing.
    "torchcodec": UNTRUSTED_PTS | AVI_B_FRAMES | START_OFFSET | DEEP_OR_ODD | NON_IDR_KEYS,
    # As torchcodec, and also wrong on edit lists and open GOPs; fails on rotated files.
    "decord": UNTRUSTED_PTS | AVI_B_FRAMES | START_OFFSET | DEEP_OR_ODD | NON_IDR_KEYS
    | EDIT_LIST | OPEN_GOP | ROTATED,
}
ROTATES = {"torchcodec": True, "decord": False}  # whether it applies the display matrix itself
# torchcodec's "approximate" seek mode maps index -> time by the header's rate: wrong on these,
# where its "exact" mode (which scans the file's packets on open) is right.
EXACT_MODE = VFR | OPEN_GOP


def decode(name: str, path: str | os.PathLike, indices: Sequence[int], *,
           info: VideoInfo | None = None) -> torch.Tensor:
    """The frames at `indices` (any order, repeats allowed) as uint8 RGB (T, H, W, C)."""
    wanted = _check_indices(indices)  # torchcodec would read a negative index from the end
    info = info if info is not None else probe(path)
    _check_range(path, wanted, info)
    refused = VideoInfo(0, 0.0, 0, 0, traits=info.traits & REFUSE[name]).reasons()
    if refused:
        raise DecodeError(f"{os.fspath(path)}: backend {name!r} does not decode this file "
                          f"exactly ({refused}); use backend 'pyav'")
    video = (_torchcodec if name == "torchcodec" else _decord)(path, indices, info)
    if info.rotation and not ROTATES[name]:
        video = torch.rot90(video, info.rotation // 90, dims=(1, 2)).contiguous()
    return video


def _torchcodec(path: str | os.PathLike, indices: Sequence[int], info: VideoInfo) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder  # optional extra
    try:
        # "approximate" maps an index to a timestamp by the header's frame rate at no cost on
        # open, which is exact on the files not refused above. "exact" first demuxes the whole
        # file to list every frame: up to 1.35x more clips/s on 5-10 s videos, 3.7x fewer on a
        # 10-minute one.
        mode = "exact" if info.traits & EXACT_MODE else "approximate"
        decoder = VideoDecoder(os.fspath(path), seek_mode=mode, dimension_order="NHWC",
                               num_ffmpeg_threads=1,  # workers already run in parallel
                               stream_index=info.stream if info.stream >= 0 else None)
        # One batch call: torchcodec sorts the indices, decodes them going forward, copies
        # repeats, and returns them in the order asked for.
        return decoder.get_frames_at([int(i) for i in indices]).data  # (T, H, W, C)
    except (RuntimeError, ValueError, IndexError) as err:
        raise DecodeError(f"{os.fspath(path)}: {err}") from err


def _decord(path: str | os.PathLike, indices: Sequence[int], info: VideoInfo) -> torch.Tensor:
    import decord  # optional extra
    try:
        reader = decord.VideoReader(os.fspath(path), num_threads=1)
        if max(indices) >= len(reader):
            raise DecodeError(f"{os.fspath(path)}: frame {max(indices)} not found; the video "
                              f"has {len(reader)} frames")
        return torch.from_numpy(np.ascontiguousarray(
            reader.get_batch(list(indices)).asnumpy()))  # (T, H, W, C)
    except (decord.DECORDError, RuntimeError) as err:  # an unopenable file is a RuntimeError
        raise DecodeError(f"{os.fspath(path)}: {err}") from err
