"""A deterministic synthetic action dataset: real H.264 MP4s in the HMDB51 layout.

    ROOT/videos/<class>/c<k>_v<nnnn>.mp4
    ROOT/splits/<class>_test_split1.txt      lines "<name>.mp4 1" (train) or "<name>.mp4 2" (test)
    ROOT/synth.json                          the generation parameters

A class is a motion only: the direction and speed of one "actor" shape. Colours, sizes, shapes and
positions are drawn per video independently of the class, over a textured background with 1-2
smaller distractor shapes moving in random directions and per-pixel noise, so no single frame
tells the classes apart. Note: left/right classes swap under a horizontal flip, so recipes for
this dataset must not use `random_horizontal_flip`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from tubelet.registry import ConfigError

FORMAT_VERSION = 1  # bump when the generated pixels change, so old roots are not silently reused
DIRECTIONS = [("right", (0, 1)), ("left", (0, -1)), ("down", (1, 0)), ("up", (-1, 0)),
              ("down_right", (1, 1)), ("up_left", (-1, -1)), ("down_left", (1, -1)),
              ("up_right", (-1, 1))]  # (name, (dy, dx))
SPEEDS = {"slow": 1, "fast": 3}  # px per frame: 2 vs 6 px between frames sampled at stride 2
SINGLE_SPEED = 2  # px per frame when there are too few classes to split by speed
SPLIT_IDS = {"train": 1, "test": 2}  # the HMDB51 split-file ids


def motion_classes(num_classes: int) -> list[tuple[str, tuple[int, int]]]:
    """(class name, (dy, dx) px per frame) for each class, in generation order.

    An even count >= 4 is directions x {slow, fast}; otherwise one speed, one direction per class.
    """
    if not 2 <= num_classes <= 2 * len(DIRECTIONS):
        raise ConfigError(f"num_classes: must be in [2, {2 * len(DIRECTIONS)}], "
                         f"got {num_classes}")
    if num_classes >= 4 and num_classes % 2 == 0:
        return [(f"move_{name}_{speed_name}", (dy * speed, dx * speed))
                for name, (dy, dx) in DIRECTIONS[:num_classes // 2]
                for speed_name, speed in SPEEDS.items()]
    if num_classes > len(DIRECTIONS):
        raise ConfigError(f"num_classes: an odd count must be <= {len(DIRECTIONS)}, "
                         f"got {num_classes}")
    return [(f"move_{name}", (dy * SINGLE_SPEED, dx * SINGLE_SPEED))
            for name, (dy, dx) in DIRECTIONS[:num_classes]]


def _stamp(rng: np.random.Generator, side: int) -> np.ndarray:
    """A (side, side) bool mask: a filled square or disk, chosen at random."""
    if rng.random() < 0.5:
        return np.ones((side, side), dtype=bool)
    centre = (side - 1) / 2
    y, x = np.ogrid[:side, :side]
    return (y - centre) ** 2 + (x - centre) ** 2 <= (side / 2) ** 2


def _paint(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray, y: float, x: float) -> None:
    """Paint `mask` at top-left (y, x) on a torus, so a shape leaving one edge enters the other
    and its direction of motion stays visible in every frame."""
    size = frame.shape[0]
    rows = (round(y) + np.arange(mask.shape[0])) % size
    cols = (round(x) + np.arange(mask.shape[1])) % size
    patch = frame[np.ix_(rows, cols)]
    patch[mask] = colour
    frame[np.ix_(rows, cols)] = patch


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour, all-dark or all-bright, so every shape stands out from the mid-tone
    background whatever its hue."""
    return rng.uniform(0, 70, 3) if rng.random() < 0.5 else rng.uniform(185, 255, 3)


def render_video(rng: np.random.Generator, *, velocity: tuple[int, int], num_frames: int,
                 size: int, more_actors: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """One clip whose actor moves by `velocity` (dy, dx) px per frame: uint8 (T, H, W, C).
    `more_actors`: the velocities of further actors (the multi-label layout's second motion),
    drawn after everything else, so a one-actor clip keeps its pixels."""
    # A static, smooth, mid-tone texture: clutter that a model must learn to ignore.
    grey = rng.uniform(80, 175, (1, 1, 4, 4)) + rng.uniform(-20, 20, (1, 3, 4, 4))
    background = F.interpolate(torch.from_numpy(grey.astype(np.float32)), size=(size, size),
                               mode="bilinear", align_corners=False)
    background = background[0].permute(1, 2, 0).numpy()  # (1,3,4,4) -> (H,W,C)

    # (mask, colour, start, velocity) per shape; the actor is larger than every distractor.
    shapes = [(_stamp(rng, int(rng.integers(size // 5, size // 4 + 1))), _colour(rng),
               rng.uniform(0, size, 2), np.array(velocity, dtype=np.float64))]
    for _ in range(int(rng.integers(1, 3))):
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2.0)
        shapes.append((_stamp(rng, int(rng.integers(max(size // 10, 2), size // 8 + 1))),
                       _colour(rng), rng.uniform(0, size, 2),
                       speed * np.array([np.sin(angle), np.cos(angle)])))
    for k, more in enumerate(more_actors):  # after the actor, painted over the distractors
        shapes.insert(1 + k, (_stamp(rng, int(rng.integers(size // 5, size // 4 + 1))),
                              _colour(rng), rng.uniform(0, size, 2),
                              np.array(more, dtype=np.float64)))

    video = np.empty((num_frames, size, size, 3), dtype=np.float32)  # (T,H,W,C)
    for t in range(num_frames):
        video[t] = background
        # Distractors first so the actor is never hidden behind one.
        for mask, colour, start, step in reversed(shapes):
            y, x = start + t * step
            _paint(video[t], mask, colour, y, x)
    video += rng.normal(0, 6, video.shape).astype(np.float32)
    return np.clip(video, 0, 255).round().astype(np.uint8)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, *, fps: int, gop: int = 8,
              crf: int = 18, preset: str = "veryfast") -> None:
    """Encode uint8 (T, H, W, C) RGB frames as an H.264 MP4 (H and W must be even)."""
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        # One thread: frames are tiny, and x264's thread start-up would dominate. MB-tree off:
        # with it, x264 (core 165) gave different bytes for the same frames on ~10-50% of
        # encodes of these tiny clips; without it, 0 of 900 differed.
        stream.options = {"crf": str(crf), "preset": preset, "threads": "1",
                          "x264-params": "mbtree=0"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush delayed (B-)frames


def _parameters(**kwargs: int) -> dict[str, int]:
    return {"version": FORMAT_VERSION, **kwargs}


def write_synthetic_dataset(root: str | os.PathLike, *, num_classes: int = 8,
                            num_train_per_class: int = 40, num_test_per_class: int = 10,
                            num_frames: int = 16, size: int = 40, fps: int = 8,
                            seed: int = 0) -> None:
    """Generate the dataset into `root`, which must not exist or be empty. It is written to a
    temporary sibling directory and renamed into place, so a killed run leaves no half dataset."""
    classes = motion_classes(num_classes)
    if num_train_per_class < 1 or num_test_per_class < 0:
        raise ConfigError("num_train_per_class: need num_train_per_class >= 1 and "
                          "num_test_per_class >= 0")
    if size < 16 or size % 2:
        raise ConfigError(f"size: must be even and >= 16 (H.264 4:2:0), "
                          f"got {size}")
    if num_frames < 1 or fps < 1:
        raise ConfigError(f"num_frames, fps: must be >= 1, "
                          f"got {num_frames}, {fps}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"synthetic actions: {str(root)!r} exists and is not empty")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        (tmp / "splits").mkdir()
        for k, (class_name, velocity) in enumerate(classes):
            (tmp / "videos" / class_name).mkdir(parents=True)
            lines = []
            for split, count in (("train", num_train_per_class), ("test", num_test_per_class)):
                for i in range(count):
                    # Seeded by (seed, split, class, i): train and test never share a stream.
                    rng = np.random.default_rng([seed, SPLIT_IDS[split], k, i])
                    name = f"c{k}_v{len(lines):04d}.mp4"
                    frames = render_video(rng, velocity=velocity, num_frames=num_frames, size=size)
                    write_mp4(tmp / "videos" / class_name / name, frames, fps=fps)
                    lines.append(f"{name} {SPLIT_IDS[split]}\n")
            (tmp / "splits" / f"{class_name}_test_split1.txt").write_text("".join(lines))
        params = _parameters(num_classes=num_classes, num_train_per_class=num_train_per_class,
                             num_test_per_class=num_test_per_class, num_frames=num_frames,
                             size=size, fps=fps, seed=seed)
        (tmp / "synth.json").write_text(json.dumps(params, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        try:
            os.rename(tmp, root)
        except OSError as err:  # another process (e.g. another rank) got there first
            raise FileExistsError(f"synthetic actions: {str(root)!r} appeared while "
                                  f"writing") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_synthetic_dataset(root: str | os.PathLike, *, num_classes: int = 8,
                             num_train_per_class: int = 40, num_test_per_class: int = 10,
                             num_frames: int = 16, size: int = 40, fps: int = 8,
                             seed: int = 0) -> Path:
    """Generate the dataset at `root` unless `root/synth.json` exists (same arguments as
    `write_synthetic_dataset`). A root made with other parameters is an error, not a reuse."""
    kwargs = dict(num_classes=num_classes, num_train_per_class=num_train_per_class,
                  num_test_per_class=num_test_per_class, num_frames=num_frames, size=size,
                  fps=fps, seed=seed)
    root = Path(root)
    marker = root / "synth.json"
    if not marker.exists():
        try:
            write_synthetic_dataset(root, **kwargs)
        except FileExistsError:
            if not marker.exists():  # not a concurrent writer: a foreign directory is in the way
                raise
    check_parameters(root, wanted=_parameters(**kwargs))
    return root


def check_parameters(root: Path, *, wanted: dict) -> None:
    """ConfigError unless the dataset at `root` was written with the parameters `wanted`
    (its synth.json), naming each one that differs."""
    found = json.loads((root / "synth.json").read_text())
    if found != wanted:
        diff = {k: (found.get(k), wanted.get(k)) for k in sorted(wanted.keys() | found.keys())
                if found.get(k) != wanted.get(k)}
        raise ConfigError(f"synthetic dataset at {str(root)!r} was made with other parameters "
                          f"{{key: (found, wanted)}} {diff}; delete it or choose another root")
