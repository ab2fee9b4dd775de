"""Clip decoding speed: our PyAV loader against a naive full-decode PyAV loader, decord and
torchcodec (when installed), and against the bound set by the codec itself.

    python benchmarks/decode.py [--reps 5] [--clips 8] [--dir DIR]

It writes its own H.264 test videos with PyAV (340x256 with keyframe interval 250 and 16, and
one 1280x720) and an MPEG-4 Part 2 AVI with B-frames (UCF101's kind: no usable timestamps, so
our loader decodes it from the start), then loads 16-frame stride-4 clips at seeded random
starts, single-threaded, with the loaders interleaved rep by rep; it reports the median
clips/s of each. The bound for a clip is (frames from the keyframe before its first frame to
its last frame) / (the file's sequential decode rate, frames/s, without RGB conversion): no
loader that decodes the codec can beat it (for the AVI, from frame 0: the keyframes there
cannot be placed without decoding). Each loader gets the file's `probe()` result, as the
datasets pass it from the metadata index. A backend that refuses a file (DecodeError: it
cannot decode it exactly) is left out of its row. The last line gives the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tubelet.data.decode import (DecodeError, backend_available, decode_frames,  # noqa: E402
                                  probe)

NUM_FRAMES, STRIDE = 16, 4
VIDEOS = {  # name: (width, height, frames, keyframe interval)
    "340x256_gop250": (340, 256, 300, 250),
    "340x256_gop16": (340, 256, 300, 16),
    "1280x720_gop32": (1280, 720, 150, 32),
    "avi_mpeg4_bframes": (320, 240, 300, 250),
}


def write_video(path: Path, *, width: int, height: int, num_frames: int, gop: int) -> None:
    """Moving gradients plus noise: enough detail that decoding costs what real video costs."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:height, :width].astype(np.float32)
    avi = path.suffix == ".avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4" if avi else "libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, 30)
        if avi:  # XviD-like: two B-frames, keyframe every 250
            stream.codec_context.max_b_frames = 2
            stream.options = {"threads": "2", "qscale": "4"}
        else:
            stream.options = {"preset": "veryfast", "crf": "23", "keyint_min": str(gop),
                              "sc_threshold": "0", "threads": "2"}
        for t in range(num_frames):
            base = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, (x + y - 4 * t) % 256], -1)
            noise = rng.normal(0, 12, (height // 4, width // 4, 1)).repeat(4, 0).repeat(4, 1)
            rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def keyframes(path: Path) -> list[int]:
    if probe(path).mode == "sequential":
        return [0]  # decoded from the start
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, tb = stream.average_rate, stream.time_base
        return sorted(round(p.pts * tb * fps) for p in container.demux(stream)
                      if p.is_keyframe and p.pts is not None)


def sequential(path: Path) -> int:
    """Decode the whole file in order, one thread, no conversion; returns the frame count."""
    with av.open(str(path)) as container:
        container.streams.video[0].codec_context.thread_count = 1
        return sum(1 for _frame in container.decode(video=0))


def naive(path: Path, indices: list[int]) -> np.ndarray:
    """What a first PyAV loader does: decode every frame to RGB, then pick."""
    with av.open(str(path)) as container:
        container.streams.video[0].codec_context.thread_count = 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[i] for i in indices])


def loaders() -> dict[str, object]:
    out = {"ours": lambda p, i, info: decode_frames(p, i, info=info),
           "naive": lambda p, i, info: naive(p, i)}
    for name in ("decord", "torchcodec"):
        if backend_available(name):
            out[name] = lambda p, i, info, b=name: decode_frames(p, i, backend=b, info=info)
    return out


def resize_ratio(reps: int) -> float:
    """Median time of float-then-resize over uint8 resize (then float), for a 16-frame 340x256
    clip to short side 224: why `short_side_resize` runs before `normalize`."""
    import torch

    from tubelet.data.transforms import resize
    clip = torch.randint(0, 256, (3, 16, 256, 340), dtype=torch.uint8)
    ratios = []
    for _ in range(reps):
        start = time.perf_counter()
        resize(clip, 224, 298).float()
        t_uint8 = time.perf_counter() - start
        start = time.perf_counter()
        resize(clip.float(), 224, 298)
        ratios.append((time.perf_counter() - start) / t_uint8)
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--clips", type=int, default=8, help="clips per video per rep")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="tubelet-decode-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    span = (NUM_FRAMES - 1) * STRIDE + 1
    results: dict[str, dict[str, list[float]]] = {}
    bounds: dict[str, float] = {}
    names = loaders()
    # One intra-op thread, as DataLoader workers have: torchcodec runs torch ops per frame, and
    # on a busy machine a second OpenMP thread spinning for a core cut its clips/s 2-3x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"loaders: {', '.join(names)}; {NUM_FRAMES}-frame stride-{STRIDE} clips, one thread")
    for video, (w, h, n, gop) in VIDEOS.items():
        path = root / (f"{video}.avi" if video.startswith("avi") else f"{video}.mp4")
        if not path.exists():
            write_video(path, width=w, height=h, num_frames=n, gop=gop)
        starts = rng.integers(0, n - span + 1, args.clips).tolist()
        clips = [[s + k * STRIDE for k in range(NUM_FRAMES)] for s in starts]
        keys = keyframes(path)
        decoded = sum(c[-1] - max(k for k in keys if k <= c[0]) + 1 for c in clips)
        info = probe(path)
        usable = {}
        for name, load in names.items():
            try:
                load(path, clips[0], info)
                usable[name] = load
            except DecodeError as err:
                print(f"{video}: {name} refuses the file: {err}")
        times: dict[str, list[float]] = {name: [] for name in usable}
        rates = []
        for _ in range(args.reps):  # interleaved: load on the shared machine hits all alike
            start = time.perf_counter()
            rates.append(sequential(path) / (time.perf_counter() - start))
            for name, load in usable.items():
                start = time.perf_counter()
                for c in clips:
                    load(path, c, info)
                times[name].append(len(clips) / (time.perf_counter() - start))
        rate = statistics.median(rates)
        bounds[video] = len(clips) / (decoded / rate)  # clips/s
        results[video] = times
        row = "  ".join(f"{k}={statistics.median(v):8.1f}" for k, v in times.items())
        print(f"{video:16s} clips/s  {row}  bound={bounds[video]:8.1f}  "
              f"(keyframes {len(keys)}, sequential {rate:.0f} frames/s)")
    torch.set_num_threads(threads)
    ratios = []
    for video, times in results.items():
        ours = statistics.median(times["ours"])
        parts = [f"naive {ours / statistics.median(times['naive']):.2f}x"]
        parts += [f"{k} {ours / statistics.median(times[k]):.2f}x" for k in times
                  if k not in ("ours", "naive")]
        parts.append(f"bound {ours / bounds[video]:.2f}")
        ratios.append(f"{video}: " + ", ".join(parts))
    resize_x = resize_ratio(max(args.reps, 5))
    print(f"resize 16x256x340 -> short side 224: uint8 first is {resize_x:.2f}x faster than float")
    print("ratios (ours / other, clips/s): " + "; ".join(ratios) +
          f"; resize uint8/float {resize_x:.2f}x")


if __name__ == "__main__":
    main()
