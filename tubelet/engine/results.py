"""The test stage's files, written by rank 0 from results already gathered over all ranks.

Classification, in `<run dir>/test/`:

    predictions.jsonl      one line per video: id, path, label, top-k class names and scores
    per_class.csv          class_id, class, support, correct, accuracy
    confusion_matrix.csv   counts, rows true and columns predicted, with class names
    confusion_matrix.png   the same as a picture (the `plot` extra; the most confused classes
                           of a large label set)

Regression (gaze, score): `predictions.jsonl` with id, path, prediction, target and error.
Each file is written atomically; ids are the dataset's video indices, once each.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tubelet.plots import confusion_png
from tubelet.rundir import write_atomic

TOP_K = 5  # classes listed per video in predictions.jsonl


def class_names(dataset: Any, num_classes: int) -> list[str]:
    """The dataset's `classes` when it names every class, else the class ids as text."""
    names = getattr(dataset, "classes", None)
    if isinstance(names, (list, tuple)) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(k) for k in range(num_classes)]


def video_paths(dataset: Any) -> Callable[[int], str | None]:
    """Video index -> its file (a clip dataset's `samples`; `repeat` wraps around), or None."""
    samples = getattr(dataset, "samples", None)
    if samples is None or not len(samples) or not hasattr(samples[0], "path"):
        return lambda index: None
    return lambda index: str(samples[index % len(samples)].path)


def write_report(out_dir: Path, results: dict[str, Any], *, classes: Sequence[str] | None,
                 path_of: Callable[[int], str | None]) -> tuple[dict[str, str], np.ndarray | None]:
    """Write the files for `results` (a task's `test_results()`); returns (name -> file
    relative to the run dir, the confusion picture as HxWx3 uint8 or None)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if results["kind"] == "classification":
        return _classification(out_dir, results, classes or [], path_of)
    rows = []
    for i, vid in enumerate(results["id"].tolist()):
        rows.append({"id": vid, "path": path_of(vid), "pred": _plain(results["pred"][i]),
                     "target": _plain(results["target"][i]),
                     results["error_name"]: float(results["error"][i])})
    _write_jsonl(out_dir / "predictions.jsonl", rows)
    return {"predictions": f"{out_dir.name}/predictions.jsonl"}, None


def _classification(out_dir: Path, r: dict[str, Any], classes: Sequence[str],
                    path_of: Callable[[int], str | None]
                    ) -> tuple[dict[str, str], np.ndarray | None]:
    k = min(TOP_K, r["scores"].shape[1])
    top = r["scores"].topk(k, dim=-1)  # same ordering rule as the accuracy metric's top-k
    rows = []
    for i, vid in enumerate(r["id"].tolist()):
        ids = top.indices[i].tolist()
        rows.append({"id": vid, "path": path_of(vid), "label": classes[int(r["label"][i])],
                     "label_id": int(r["label"][i]), "top": [classes[c] for c in ids],
                     "top_ids": ids, "scores": [float(s) for s in top.values[i]]})
    _write_jsonl(out_dir / "predictions.jsonl", rows)
    confusion = r["confusion"].cpu().numpy()
    table = [["class_id", "class", "support", "correct", "accuracy"]]
    for c, name in enumerate(classes):
        table.append([c, name, int(r["support"][c]), int(confusion[c, c]),
                      f"{float(r['per_class_acc'][c]):.6f}"])
    _write_csv(out_dir / "per_class.csv", table)
    _write_csv(out_dir / "confusion_matrix.csv",
               [["true \\ predicted", *classes],
                *[[name, *confusion[c].tolist()] for c, name in enumerate(classes)]])
    files = {"predictions": "predictions.jsonl", "per_class": "per_class.csv",
             "confusion_csv": "confusion_matrix.csv"}
    image = confusion_png(confusion, classes, out_dir / "confusion_matrix.png",
                          title=f"test confusion ({len(rows)} videos)")
    if image is not None:
        files["confusion_png"] = "confusion_matrix.png"
    return {name: f"{out_dir.name}/{f}" for name, f in files.items()}, image


def per_class_summary(results: dict[str, Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """[{class, support, accuracy}] for test_results.json."""
    return [{"class": name, "support": int(results["support"][c]),
             "accuracy": float(results["per_class_acc"][c])} for c, name in enumerate(classes)]


def _plain(value: torch.Tensor) -> float | list[float]:
    return float(value) if value.ndim == 0 else [float(x) for x in value]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows).encode())


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_atomic(path, text.getvalue().encode())
