"""Pictures of results, drawn with matplotlib (the `plot` extra), imported only when one is
drawn. Without matplotlib a picture is skipped with one log line naming the extra; the numbers
it shows are always written as CSV by the caller as well."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("tubelet")
MAX_SHOWN = 30  # classes on a confusion matrix's axes; more are unreadable on one page
EXTRA_HINT = "pip install 'tubelet[plot]'"


def most_confused(confusion: np.ndarray, num: int) -> np.ndarray:
    """The `num` classes that take part in the most errors (off-diagonal counts in their row
    and their column), in class order: the part of a large matrix worth looking at."""
    off = confusion - np.diag(np.diag(confusion))
    errors = off.sum(axis=0) + off.sum(axis=1)
    chosen = np.argsort(-errors, kind="stable")[:num]
    return np.sort(chosen)


def confusion_png(confusion: np.ndarray, names: Sequence[str], path: Path, *,
                  title: str = "confusion matrix") -> np.ndarray | None:
    """Draw `confusion` (K x K counts, rows true, columns predicted) to `path` with class
    names on both axes and a colour bar (the share of each true class's videos); above
    MAX_SHOWN classes only the most confused ones. Returns the picture as an HxWx3 uint8
    array (for trackers), or None when matplotlib is missing (one log line)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("%s skipped: matplotlib is not installed (%s); the CSV has the numbers",
                 path.name, EXTRA_HINT)
        return None
    k = len(confusion)
    shown = np.arange(k) if k <= MAX_SHOWN else most_confused(confusion, MAX_SHOWN)
    if k > MAX_SHOWN:
        title = f"{title}: the {MAX_SHOWN} most confused of {k} classes"
    counts = confusion[np.ix_(shown, shown)]
    # colour: the share of the true class (over all its videos, also those outside the view)
    rows = np.maximum(confusion[shown].sum(axis=1, keepdims=True), 1)
    share = counts / rows
    labels = [str(names[i]) for i in shown]
    side = max(4.0, 0.32 * len(shown) + 2.5)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(len(shown)), labels, rotation=60, ha="right", rotation_mode="anchor",
                  fontsize=8)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if len(shown) <= 15:  # counts in the cells while they fit
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(int(n)), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)
    return _rgb(fig)


def _rgb(fig: Any) -> np.ndarray:
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
