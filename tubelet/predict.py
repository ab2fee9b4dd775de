"""`tubelet predict CHECKPOINT|RUN_DIR INPUT...`: top-k classes of any videos, as JSON lines.

The model and its preprocessing come from the checkpoint's card (tubelet/model_card.py): the
clips are sampled, decoded and transformed by the same dataset code as `tubelet eval`
(`VideoDataset.load`, `clip_indices`, the recipe's eval transforms, the multi-view crops), and a
video's score is the mean softmax over its views, as in the eval metric. So on a labelled
split at the same views, predict's top-1 accuracy equals eval's `acc1`.

INPUT: video files, folders (searched recursively for VIDEO_SUFFIXES), a `video_list` text file
(.txt), a Kinetics CSV (.csv) or an SSv2 JSON list (.json), read by the datasets' own readers.

Rows, one JSON object per line, in input order (names follow `predictions.jsonl`):
    {"path": ..., "top": [names], "top_ids": [ids], "scores": [mean softmax]}
    (+ "label", "label_id" when the input annotates one)
    with --window: {"path", "window": [start_s, end_s], "top", ...} per window, then
    {"path", "windows": n, "top", ...}: the mean of the window scores
    an unreadable video: {"path": ..., "error": "..."} (one row; the run goes on)
Exit status: 0 when every video got a prediction, EXIT_SOME_FAILED (4) when some rows are
errors (every other row is valid), 2 for a user error before anything ran.
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
import torch
from torch.utils.data import DataLoader

from tubelet.data.datasets.video import VideoDataset
from tubelet.data.decode import DecodeError
from tubelet.data.tables import InfoTable, SampleTable
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
EXIT_SOME_FAILED = 4
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                  ".mts", ".flv", ".wmv", ".3gp", ".ogv")
PROGRESS_EVERY_S = 2.0


# ---------------------------------------------------------------------------- inputs
def _rows_of(table: SampleTable) -> list[tuple[Path, Any, str, int]]:
    return [(table.paths[i], table.target(i), table.sources[table.source_ids[i]],
             int(table.lines[i])) for i in range(len(table))]


def _annotation_rows(path: Path, *, classes: list[str] | None,
                     root: Path | None) -> list[tuple[Path, Any, str, int]]:
    """The videos of an annotation file, through its dataset's reader."""
    base = root or path.parent
    if path.suffix == ".txt":
        from tubelet.data.datasets.video_list import read_video_list
        return _rows_of(read_video_list(path, root=base, num_classes=None))
    if path.suffix == ".csv":
        from tubelet.data.datasets.kinetics import clip_name, read_csv
        from tubelet.data.tables import at_line
        rows, labelled = read_csv(path)
        out = []
        for row, lineno in rows:
            name = clip_name(row["youtube_id"], row["time_start"], row["time_end"], ".mp4")
            label = row.get("label") if labelled else None
            nested = base / label / name if label else None  # the crawler layout
            video = nested if nested is not None and nested.exists() else base / name
            out.append((video, label, at_line(path), lineno))
        return out
    from tubelet.data.datasets.ssv2 import read_items  # .json
    lookup = {name: k for k, name in enumerate(classes or [])}
    return read_items(path, lookup, root=base, extension=".webm",
                      labels="the checkpoint's class names")


def collect_inputs(inputs: list[str | Path], *, classes: list[str] | None = None,
                   root: str | Path | None = None) -> tuple[list[Path], list[Any]]:
    """(video paths, their labels or None) in input order; folders sorted, recursively."""
    videos: list[Path] = []
    labels: list[Any] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*")
                           if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not found:
                raise ConfigError(f"{item}: no videos in this folder (looked for "
                                  f"{', '.join(VIDEO_SUFFIXES)})")
            videos += found
            labels += [None] * len(found)
        elif item.suffix.lower() in (".txt", ".csv", ".json"):
            rows = _annotation_rows(item, classes=classes, root=Path(root) if root else None)
            if not rows:
                raise ConfigError(f"{item}: lists no videos")
            videos += [r[0] for r in rows]
            labels += [r[1] for r in rows]
        elif item.exists() or item.is_symlink():
            videos.append(item)  # a broken file is an error row, not a refusal
            labels.append(None)
        else:
            raise ConfigError(f"{item}: no such file or folder")
    return videos, labels


# ---------------------------------------------------------------------------- dataset
class PredictVideos(VideoDataset):
    """The videos to predict, as an unlabelled test split with the recipe's eval clip options.
    With `window_s`, each video is cut into windows of that many seconds every `stride_s`
    (the windows that fit; a shorter video is one window) and each window is a sample whose
    clips `frame_span` confines to it. A file that does not decode is an error item, never
    replaced by another (the training datasets' substitution is off)."""

    def __init__(self, videos: list[Path], *, index_file: Path, num_frames: int, stride: int,
                 sampling: str = "interval", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1,
                 transform: Callable[..., torch.Tensor] | None = None, to_float: bool = True,
                 window_s: float | None = None, stride_s: float | None = None,
                 backend: str = "pyav") -> None:
        super().__init__(subset="test", transform=transform, temporal_views=temporal_views,
                         spatial_crops=spatial_crops, to_float=to_float)
        table = SampleTable.build([(p, None, "{path}", 0) for p in videos])
        level = log.level
        log.setLevel(logging.ERROR)  # its warning names the temporary index; rows say it all
        try:
            self.setup_videos(table, source="the inputs", index_file=index_file,
                              num_frames=num_frames, stride=stride, sampling=sampling,
                              target_fps=target_fps, backend=backend)
        finally:
            log.setLevel(level)
        self.file_of = np.arange(len(videos))  # sample -> input video
        self.spans = np.zeros((len(videos), 2), dtype=np.int64)  # first frame, frame count
        self.spans[:, 1] = self.infos.array["num_frames"]
        self.seconds: np.ndarray | None = None  # (start, end) of each window
        if window_s is not None:
            self._cut_windows(window_s, stride_s or window_s)

    def _cut_windows(self, window_s: float, stride_s: float) -> None:
        if window_s <= 0 or stride_s <= 0:
            raise ConfigError(f"--window, --stride: must be > 0, got {window_s}, {stride_s}")
        files, spans, seconds = [], [], []
        for i in range(len(self.samples)):
            info = self.infos[i]
            if info is None:  # unreadable: one sample, which turns into one error row
                files.append(i), spans.append((0, 0)), seconds.append((0.0, 0.0))
                continue
            length, step = (max(1, round(s * info.fps)) for s in (window_s, stride_s))
            for first in range(0, max(info.num_frames - length, 0) + 1, step):
                count = min(length, info.num_frames - first)
                files.append(i), spans.append((first, count))
                seconds.append((first / info.fps, (first + count) / info.fps))
        self.file_of, self.spans = np.array(files), np.array(spans, dtype=np.int64)
        self.seconds = np.array(seconds)
        old_bad = self.bad
        self.bad = {k: old_bad[f] for k, f in enumerate(files) if f in old_bad}
        self.samples = SampleTable.build([(self.samples.paths[f], None, "{path}", 0)
                                          for f in files])
        self.infos = InfoTable(self.infos.array[self.file_of], self.infos.bad[self.file_of])

    def frame_span(self, i: int, num_frames: int) -> tuple[int, int]:
        first, count = self.spans[i]
        return int(first), int(count)

    def substitute(self, index: int, attempt: int) -> int:
        i = (index // self.num_views) % len(self.samples)
        raise DecodeError(self.bad[i])  # no stand-in: the caller reports this video

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        video_index, view = divmod(index, self.num_views)
        try:
            item = super().__getitem__(index)
        except (DecodeError, ValueError) as e:  # unreadable, or too small for the crop
            return {"index": video_index, "view": view, "error": str(e).splitlines()[0]}
        item.pop("bad", None)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Clips stacked by shape (a folder may mix sizes when the recipe has no sizing
    transform), and the error items apart."""
    groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    errors = []
    for item in items:
        if "error" in item:
            errors.append((item["index"], item["error"]))
        else:
            groups.setdefault(tuple(item["video"].shape), []).append(item)
    return {"groups": [(torch.stack([it["video"] for it in g]),
                        [it["index"] for it in g]) for g in groups.values()],
            "errors": errors}


# ---------------------------------------------------------------------------- running
def parse_views(text: str | None) -> tuple[int, int] | None:
    """"TxS" (temporal views x spatial crops, e.g. 5x3) -> (5, 3)."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(f"--views: expected TxS such as 1x1 or 5x3, got {text!r}")
    return int(parts[0]), int(parts[1])


class _Rows:
    """Per-sample score sums over views, turned into rows in input order as samples finish."""

    def __init__(self, dataset: PredictVideos, *, videos: list[Path], labels: list[Any],
                 classes: list[str] | None, top_k: int, out: TextIO,
                 classify: bool = True) -> None:
        self.ds, self.videos, self.labels, self.classes = dataset, videos, labels, classes
        self.top_k, self.out, self.classify = top_k, out, classify
        n = len(dataset.samples)
        self.sums: list[torch.Tensor | None] = [None] * n
        self.views = np.zeros(n, dtype=np.int64)
        self.errors: dict[int, str] = {}
        self.next = 0  # the first sample not yet written
        self.window_scores: list[torch.Tensor] = []  # of the current file
        self.num_errors = self.num_done = 0

    def add(self, index: int, scores: torch.Tensor | None = None, error: str | None = None) -> None:
        if error is not None:
            self.errors.setdefault(index, error)
        else:
            self.sums[index] = scores if self.sums[index] is None else self.sums[index] + scores
        self.views[index] += 1

    def flush(self) -> None:
        n = len(self.views)
        while self.next < n and self.views[self.next] == self.ds.num_views:
            self._finish(self.next)
            self.sums[self.next] = None
            self.next += 1

    def _names(self, ids: list[int]) -> list[str]:
        return [self.classes[c] if self.classes and c < len(self.classes) else str(c) for c in ids]

    def _row(self, f: int, scores: torch.Tensor | None, error: str | None,
             **extra: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"path": str(self.videos[f]), **extra}
        label = self.labels[f]
        if label is not None:
            names = self.classes or []
            label_id = label if isinstance(label, int) else (names.index(label) if label in names
                                                             else None)
            row["label"] = names[label] if isinstance(label, int) and label < len(names) \
                else str(label)
            row["label_id"] = label_id
        if error is not None:
            for _ in range(2):  # the reasons lead with the path, which the row already has
                error = error.removeprefix(f"{row['path']}: ")
            row["error"] = error
            return row
        if not self.classify:  # regression (gaze, score): the mean output over views
            row["output"] = [round(float(v), 6) for v in scores]
            return row
        top = scores.topk(min(self.top_k, len(scores)))
        ids = top.indices.tolist()
        row.update(top=self._names(ids), top_ids=ids,
                   scores=[round(float(s), 6) for s in top.values])
        return row

    def _write(self, row: dict[str, Any]) -> None:
        self.out.write(json.dumps(row) + "\n")
        self.num_errors += "error" in row

    def _finish(self, i: int) -> None:
        f = int(self.ds.file_of[i])
        scores = None if i in self.errors else self.sums[i] / self.ds.num_views
        last_of_file = i + 1 == len(self.views) or int(self.ds.file_of[i + 1]) != f
        if self.ds.seconds is None or self.ds.infos.bad[i] and self.ds.spans[i, 1] == 0:
            self._write(self._row(f, scores, self.errors.get(i)))  # one row per video
        else:
            start, end = (round(float(t), 3) for t in self.ds.seconds[i])
            self._write(self._row(f, scores, self.errors.get(i), window=[start, end]))
            if scores is not None:
                self.window_scores.append(scores)
            if last_of_file:
                n = len(self.window_scores)
                mean = torch.stack(self.window_scores).mean(0) if n else None
                self._write(self._row(f, mean, None if n else "no window could be read",
                                      windows=n))
                self.window_scores = []
        if last_of_file:
            self.num_done += 1
            self.out.flush()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name!r} requested but CUDA is not available")
    return torch.device(name)


def _scores(model: torch.nn.Module, video: torch.Tensor, *, classify: bool) -> torch.Tensor:
    out = model(video)
    if not torch.is_tensor(out) or out.ndim != 2:
        shape = tuple(out.shape) if torch.is_tensor(out) else ""
        raise ValueError(f"the model returns {type(out).__name__} {shape}, not (batch, classes)")
    # the eval metric's rule: a video's score is the mean softmax over its views
    return out.float().softmax(dim=-1) if classify else out.float()


def _batches(loader: DataLoader, device: torch.device,
             device_transform: Callable[..., torch.Tensor] | None
             ) -> Iterator[tuple[list[tuple[torch.Tensor, list[int]]], list[tuple[int, str]]]]:
    for batch in loader:
        groups = []
        for video, indices in batch["groups"]:
            video = video.to(device, non_blocking=device.type == "cuda")
            if device_transform is not None:  # as BatchStream.apply does in eval
                clips = [device_transform(clip, generator=None) for clip in video]
                video = torch.stack([c.float() / 255 if c.dtype == torch.uint8 else c
                                     for c in clips])
            groups.append((video, indices))
        yield groups, batch["errors"]


def _progress(done: int, total: int, start: float, *, last: list[float],
              final: bool = False) -> None:
    """A line on stderr every PROGRESS_EVERY_S; `last` = [time, count] of the last line."""
    now = time.monotonic()
    if (final and done != last[1]) or (not final and now - last[0] >= PROGRESS_EVERY_S):
        last[0], last[1] = now, done
        print(f"predict: {done}/{total} videos, {done / max(now - start, 1e-9):.1f}/s",
              file=sys.stderr, flush=True)


@torch.no_grad()
def predict(checkpoint: str | Path, inputs: list[str | Path], *, out: TextIO, top_k: int = 5,
            views: str | None = None, window_s: float | None = None,
            stride_s: float | None = None, batch_size: int = 8, device: str = "auto",
            num_workers: int = 2, root: str | Path | None = None) -> int:
    """Write one row per video (per window and their mean with `window_s`) to `out`; returns
    the exit status (0, or EXIT_SOME_FAILED when some rows are errors)."""
    from tubelet.build import build_transforms
    from tubelet.trained import load_trained
    if top_k < 1 or batch_size < 1 or num_workers < 0:
        raise ConfigError("--top-k, --batch-size: must be >= 1; --workers: >= 0")
    if stride_s is not None and window_s is None:
        raise ConfigError("--stride: needs --window")
    chosen = parse_views(views)  # argument errors before the checkpoint is read
    trained = load_trained(checkpoint)
    card, dev = trained.card, _device(device)
    if card.get("task") == "mae_pretrain":
        raise ConfigError(f"checkpoint: {trained.path}: a pretraining (MAE) model has no "
                          "classifier; predict with a finetuned or linear-probe run")
    clip = dict(card.get("clip") or {})
    if "num_frames" not in clip:
        raise ConfigError(f"checkpoint: {trained.path}: its {card.get('source')} does not say "
                          "how to sample a clip (not a video dataset)")
    if chosen is not None:
        clip["temporal_views"], clip["spatial_crops"] = chosen
    if trained.no_names:
        print(f"predict: class indices, not names: {trained.no_names}", file=sys.stderr)
    videos, labels = collect_inputs(inputs, classes=trained.classes, root=root)
    node = {k: card.get(k) for k in ("transforms", "device_transforms")}
    transform = build_transforms(node, key="checkpoint.card", list_key="transforms")
    device_tf = build_transforms(node, key="checkpoint.card", list_key="device_transforms")
    with tempfile.TemporaryDirectory(prefix="tubelet-predict-") as tmp:
        # the metadata index goes to a temporary folder: never write into the user's folders
        dataset = PredictVideos(videos, index_file=Path(tmp) / "index.npz", transform=transform,
                                to_float=device_tf is None, window_s=window_s, stride_s=stride_s,
                                **clip)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                            num_workers=num_workers, pin_memory=dev.type == "cuda")
        model = trained.model.to(dev)
        classify = card.get("task") == "classification"
        rows = _Rows(dataset, videos=videos, labels=labels, classes=trained.classes,
                     top_k=top_k, out=out, classify=classify)
        start, last = time.monotonic(), [time.monotonic(), -1]
        for groups, errors in _batches(loader, dev, device_tf):
            for index, error in errors:
                rows.add(index, error=error)
            for video, indices in groups:
                try:
                    scores = _scores(model, video, classify=classify)
                except (RuntimeError, ValueError, AssertionError) as e:  # a clip of another shape
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    for index in indices:
                        rows.add(index, error=f"the model cannot take a clip of shape "
                                              f"{list(video.shape[1:])}: {msg}")
                    continue
                for index, row in zip(indices, scores.cpu()):
                    rows.add(index, row)
            rows.flush()
            _progress(rows.num_done, len(videos), start, last=last)
        _progress(rows.num_done, len(videos), start, last=last, final=True)
    if rows.num_errors:
        print(f"predict: {rows.num_errors} row(s) are errors (exit {EXIT_SOME_FAILED})",
              file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
