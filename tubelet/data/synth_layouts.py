"""Small synthetic datasets in the real layout *and container* of each seed dataset, so that a
recipe runs end to end on the files its reader will meet (`tubelet data synth DIR --layout L`).
Only PyAV writes them (users have no ffmpeg CLI). The clips are synth.py's motion classes.

    hmdb51        videos/<class>/<name>.avi (MPEG-4 Part 2 with B-frames, in AVI, as HMDB51's
                  and UCF101's originals), splits/<class>_test_split{1,2,3}.txt
    ucf101        UCF-101/<Class>/v_<Class>_g<gg>_c01.avi (MPEG-4 Part 2 + B-frames, AVI),
                  ucfTrainTestlist/classInd.txt, trainlist01.txt, testlist01.txt
    kinetics      train.csv, val.csv (label,youtube_id,time_start,time_end,split), test.csv
                  (no label column, as Kinetics-600/700's), H.264 MP4 clips named
                  <youtube_id>_<start:06d>_<end:06d>.mp4: videos/<label>/ for train (crawler
                  layout), videos/ flat for val and test (CVDF layout)
    ssv2          labels/labels.json, train.json, validation.json, test.json (ids only),
                  videos/<id>.webm (VP9 in WebM)
    gaze360       imgs/rec_<rr>/head/<person:06d>/<frame:06d>.jpg (JPEG), train.txt,
                  validation.txt, test.txt ("<frame path> gx gy gz")
    ava-features  clip_vit_l14_{train,test}.npz: `features` (N, 768) float32 unit vectors
                  (CLIP ViT-L/14's width) and `targets` (N,) float32 mean scores in [1, 10]
    multilabel    two motions per clip, H.264 MP4: videos/, train/test.txt (video_list_multilabel),
                  train/test.csv (multilabel_csv), classes.txt (synth_multilabel.py)

`synth.json` records the parameters; a root made with others is refused, not reused.
"""
from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

from tubelet.data.synth import check_parameters, motion_classes, render_video, write_mp4
from tubelet.data.synth_multilabel import write_multilabel
from tubelet.registry import ConfigError, did_you_mean

LAYOUT_VERSION = 1  # bump when the generated files change
FEATURE_DIM = 768  # CLIP ViT-L/14 image embeddings, as configs/aesthetics expects
SPLITS = ("train", "test")


def write_avi_mpeg4(path: Path, frames: np.ndarray, *, fps: int, gop: int = 8) -> None:
    """MPEG-4 Part 2 (as XviD/DivX) in AVI with 2 B-frames between references: decode order
    differs from presentation order, and AVI keeps no presentation timestamps."""
    _encode(path, frames, fmt="avi", codec="mpeg4", fps=fps, gop=gop, max_b_frames=2,
            options={"threads": "1", "qscale": "3"})


def write_webm_vp9(path: Path, frames: np.ndarray, *, fps: int, gop: int = 8) -> None:
    _encode(path, frames, fmt="webm", codec="libvpx-vp9", fps=fps, gop=gop, max_b_frames=None,
            options={"threads": "1", "deadline": "realtime", "cpu-used": "8", "crf": "20",
                     "b": "0"})


def _encode(path: Path, frames: np.ndarray, *, fmt: str, codec: str, fps: int, gop: int,
            max_b_frames: int | None, options: dict[str, str]) -> None:
    # bitexact: no random segment UID or encoder string, so one seed gives the same bytes
    with av.open(os.fspath(path), "w", format=fmt, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        stream.options = options
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_jpegs(folder: Path, frames: np.ndarray, *, start: int = 0) -> None:
    """Frames as folder/<number:06d>.jpg (one image2 muxer for the whole sequence)."""
    folder.mkdir(parents=True, exist_ok=True)
    with av.open(os.fspath(folder / "%06d.jpg"), "w", format="image2",
                 options={"start_number": str(start)}) as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        stream.options = {"q:v": "3"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb),
                                                                   format="rgb24")))
        container.mux(stream.encode())


class Clips:
    """The clips of one layout: (split, class k, i) -> frames, seeded by (seed, split, k, i)."""

    def __init__(self, *, num_classes: int, counts: dict[str, int], num_frames: int, size: int,
                 fps: int, seed: int) -> None:
        self.classes = motion_classes(num_classes)
        self.counts, self.num_frames, self.size = counts, num_frames, size
        self.fps, self.seed = fps, seed

    def items(self, split: str) -> list[tuple[int, int]]:
        return [(k, i) for k in range(len(self.classes)) for i in range(self.counts[split])]

    def frames(self, split: str, k: int, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 10 + SPLITS.index(split), k, i])
        return render_video(rng, velocity=self.classes[k][1], num_frames=self.num_frames,
                            size=self.size)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _hmdb51(root: Path, clips: Clips) -> None:
    num_videos = clips.counts["train"] + clips.counts["test"]
    (root / "splits").mkdir()
    for k, (name, _) in enumerate(clips.classes):
        files = []
        for split, i in [("train", i) for i in range(clips.counts["train"])] + \
                        [("test", i) for i in range(clips.counts["test"])]:
            files.append(f"synth{len(files):03d}_{name}_f_cm_np1_fr_med_{k}.avi")
            (root / "videos" / name).mkdir(parents=True, exist_ok=True)
            write_avi_mpeg4(root / "videos" / name / files[-1], clips.frames(split, k, i),
                            fps=clips.fps)
        for split_number in (1, 2, 3):  # each split tests other videos, as HMDB51's three do
            shift = (split_number - 1) * clips.counts["test"]
            ids = [1 if (j - shift) % num_videos < clips.counts["train"] else 2
                   for j in range(num_videos)]
            (root / "splits" / f"{name}_test_split{split_number}.txt").write_text(
                "".join(f"{f} {s} \n" for f, s in zip(files, ids)))  # the originals end in " "


def _ucf101(root: Path, clips: Clips) -> None:
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    names = [_camel(name) for name, _ in clips.classes]
    (lists / "classInd.txt").write_text("".join(f"{k + 1} {n}\n" for k, n in enumerate(names)))
    train, test = [], []
    for k, name in enumerate(names):
        (root / "UCF-101" / name).mkdir(parents=True)
        # split 1 tests the first groups, as UCF101's testlist01 holds groups 1-7
        for group, (split, i) in enumerate([("test", i) for i in range(clips.counts["test"])] +
                                           [("train", i) for i in range(clips.counts["train"])]):
            file = f"{name}/v_{name}_g{group + 1:02d}_c01.avi"
            write_avi_mpeg4(root / "UCF-101" / file, clips.frames(split, k, i), fps=clips.fps)
            (train if split == "train" else test).append(
                f"{file} {k + 1}\r\n" if split == "train" else f"{file}\r\n")
    (lists / "trainlist01.txt").write_text("".join(train), newline="")
    (lists / "testlist01.txt").write_text("".join(test), newline="")


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(alphabet[j] for j in rng.integers(0, len(alphabet), 11))


def _kinetics(root: Path, clips: Clips) -> None:
    rng = np.random.default_rng([clips.seed, 99])
    labels = [name.replace("_", " ") for name, _ in clips.classes]  # "move right slow"
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    # test: the test clips again, under other ids, listed without labels (K600/K700's test.csv)
    for csv_name, split in (("train", "train"), ("val", "test"), ("test", "test")):
        for k, i in clips.items(split):
            start = int(rng.integers(0, 300))
            yid = _youtube_id(rng)
            name = f"{yid}_{start:06d}_{start + 10:06d}.mp4"
            folder = root / "videos" / (labels[k] if csv_name == "train" else "")
            folder.mkdir(parents=True, exist_ok=True)
            write_mp4(folder / name, clips.frames(split, k, i), fps=clips.fps)
            quoted = f'"{labels[k]}"' if " " in labels[k] else labels[k]
            rows[csv_name].append(f"{yid},{start},{start + 10},{csv_name}" if csv_name == "test"
                                  else f"{quoted},{yid},{start},{start + 10},{csv_name}")
    for csv_name, lines in rows.items():
        header = ("youtube_id,time_start,time_end,split" if csv_name == "test"
                  else "label,youtube_id,time_start,time_end,split")
        (root / f"{csv_name}.csv").write_text("\n".join([header, *lines]) + "\n")


def _ssv2(root: Path, clips: Clips) -> None:
    words = {"right": "left to right", "left": "right to left", "down": "top to bottom",
             "up": "bottom to top"}
    templates = []
    for name, _ in clips.classes:
        parts = name.split("_")[1:]  # move_down_right_fast -> down, right, fast
        direction = " and ".join(words[p] for p in parts if p in words)
        speed = {"slow": " slowly", "fast": " quickly"}.get(parts[-1], "")
        templates.append(f"Moving [something] from {direction}{speed}")
    (root / "labels").mkdir()
    (root / "videos").mkdir()
    classes = {t.replace("[", "").replace("]", ""): str(k) for k, t in enumerate(templates)}
    (root / "labels" / "labels.json").write_text(json.dumps(classes, indent=1))
    next_id = 1000
    for json_name, split in (("train", "train"), ("validation", "test"), ("test", "test")):
        items = []
        for k, i in clips.items(split):
            next_id += 1
            write_webm_vp9(root / "videos" / f"{next_id}.webm", clips.frames(split, k, i),
                           fps=clips.fps)
            entry = {"id": str(next_id)}
            if json_name != "test":  # test.json lists ids only
                entry.update(label=templates[k].replace("[something]", "a box"),
                             template=templates[k], placeholders=["a box"])
            items.append(entry)
        (root / "labels" / f"{json_name}.json").write_text(json.dumps(items, indent=1))


def _gaze360(root: Path, clips: Clips) -> None:
    """One person per (split, k, i): a bright disk whose offset from the centre follows the
    gaze's (x, y), drawn over the clip of class k (so the frames are varied), 6-digit frames."""
    rng = np.random.default_rng([clips.seed, 360])
    size = clips.size
    y, x = np.ogrid[:size, :size]
    person = 0
    for txt, split in (("train", "train"), ("validation", "test"), ("test", "test")):
        lines = []
        for k, i in clips.items(split):
            frames = clips.frames(split, k, i).copy()
            rel = Path(f"rec_{k:03d}/head/{person:06d}")
            start = int(rng.integers(0, 200))
            for t in range(len(frames)):
                gaze = rng.normal(0, 1, 3) * [1, 0.5, 1] + [0, 0, -1.5]
                gaze /= np.linalg.norm(gaze)
                cy, cx = (0.5 - 0.35 * gaze[1]) * size, (0.5 + 0.35 * gaze[0]) * size
                frames[t][(y - cy) ** 2 + (x - cx) ** 2 <= (size / 8) ** 2] = 255
                lines.append(f"{rel}/{start + t:06d}.jpg {gaze[0]:.6f} {gaze[1]:.6f} "
                             f"{gaze[2]:.6f}\n")
            write_jpegs(root / "imgs" / rel, frames, start=start)
            person += 1
        (root / f"{txt}.txt").write_text("".join(lines))


def _ava_features(root: Path, clips: Clips) -> None:
    """Scores that a linear model can learn: 5.5 + 2 tanh(w . f) + noise, clipped to [1, 10]."""
    rng = np.random.default_rng([clips.seed, 7])
    w = rng.normal(0, 1, FEATURE_DIM)
    w *= 3 / np.linalg.norm(w)
    for split in SPLITS:
        n = len(clips.items(split))
        f = rng.normal(0, 1, (n, FEATURE_DIM))
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        scores = np.clip(5.5 + 2 * np.tanh(f @ w * 4) + rng.normal(0, 0.1, n), 1, 10)
        with open(root / f"clip_vit_l14_{split}.npz", "wb") as out:
            np.savez(out, features=f.astype(np.float32), targets=scores.astype(np.float32))


WRITERS: dict[str, Callable[[Path, Clips], None]] = {
    "hmdb51": _hmdb51, "ucf101": _ucf101, "kinetics": _kinetics, "ssv2": _ssv2,
    "gaze360": _gaze360, "ava-features": _ava_features, "multilabel": write_multilabel}
LAYOUTS = tuple(WRITERS)


def ensure_layout(root: str | os.PathLike, *, layout: str, num_classes: int = 4,
                  num_train_per_class: int = 4, num_test_per_class: int = 2,
                  num_frames: int = 16, size: int = 32, fps: int = 8, seed: int = 0) -> Path:
    """Write `layout` at `root` unless root/synth.json says it is already there with these
    parameters; other parameters are an error. Written to a temporary sibling and renamed
    into place, so a killed run (or a concurrent rank) leaves no half dataset."""
    if layout not in WRITERS:
        raise ConfigError(f"layout: unknown {layout!r}, expected one of {list(WRITERS)}"
                          f"{did_you_mean(layout, WRITERS)}")
    if num_train_per_class < 1 or num_test_per_class < 1:
        raise ConfigError("num_test_per_class: every layout needs >= 1 train and test clip "
                          "per class")
    if size < 16 or size % 2 or num_frames < 1 or fps < 1:
        raise ConfigError(f"size: must be even and >= 16 (4:2:0 video), with num_frames and "
                          f"fps >= 1; got {size}, {num_frames}, {fps}")
    clips = Clips(num_classes=num_classes, num_frames=num_frames, size=size, fps=fps, seed=seed,
                  counts={"train": num_train_per_class, "test": num_test_per_class})
    params = {"version": LAYOUT_VERSION, "layout": layout, "num_classes": num_classes,
              "num_train_per_class": num_train_per_class,
              "num_test_per_class": num_test_per_class, "num_frames": num_frames, "size": size,
              "fps": fps, "seed": seed}
    root = Path(root)
    marker = root / "synth.json"
    if not marker.exists():
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"synth: {str(root)!r} exists and is not a synthetic dataset")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            WRITERS[layout](tmp, clips)
            (tmp / "synth.json").write_text(json.dumps(params, indent=2) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            if root.exists():
                root.rmdir()  # empty (checked above); rename cannot replace a directory
            os.rename(tmp, root)
        except OSError:
            if not marker.exists():  # not a concurrent writer that got there first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    check_parameters(root, wanted=params)
    return root
