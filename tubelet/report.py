"""`tubelet report RUN_DIR... [--out report.png]`: the curves of one or more runs, overlaid, and
a markdown table of what each reached.

It reads only the run dir's files (`metrics.jsonl`, `summary.json`), so it works on a run that
is still going: a torn last line is skipped. Neither torch nor pyplot is imported: a report of
two runs takes about as long as starting Python and importing matplotlib's Agg canvas.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tubelet.registry import ConfigError

SMOOTHING = 0.6  # TensorBoard's default: an exponential moving average, debiased at the start
NUM_COLUMNS = 3
# metrics where lower is better; every other val/test metric is maximised
LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse")


class Run:
    """One run dir's rows (`metrics.jsonl`) and model summary (`summary.json`, if written)."""

    def __init__(self, path: Path, *, name: str) -> None:
        self.path, self.name = path, name
        self.rows, self.skipped = read_rows(path / "metrics.jsonl")
        try:
            self.summary = json.loads((path / "summary.json").read_text())
        except (OSError, ValueError):
            self.summary = {}

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of `key`, in row order (a resumed run's rows are already repaired)."""
        pts = [(r["step"], r[key]) for r in self.rows if _number(r.get(key))]
        return [s for s, _ in pts], [float(v) for _, v in pts]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The complete rows of a metrics.jsonl and how many lines were skipped (a line still being
    written by a live run has no newline yet)."""
    if not path.is_file():
        raise ConfigError(f"{path.parent}: no metrics.jsonl here; expected a run directory")
    rows, skipped = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if line.endswith(b"\n") and isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        elif line.strip():
            skipped += 1
    return rows, skipped


def open_runs(paths: list[Path]) -> list[Run]:
    """Runs named by their directory; by their whole path where two names clash."""
    names = [p.name or str(p) for p in paths]
    return [Run(p, name=str(p) if names.count(n) > 1 else n) for p, n in zip(paths, names)]


def metric_keys(runs: list[Run]) -> list[str]:
    """train/loss and train/lr, then every val/* and test/* key any run logged."""
    seen = {k for run in runs for row in run.rows for k in row}
    evals = sorted(k for k in seen if k.startswith(("val/", "test/")))
    return [k for k in ("train/loss", "train/lr") if k in seen] + evals


def lower_is_better(key: str) -> bool:
    return any(word in key.rsplit("/", 1)[-1] for word in LOWER_IS_BETTER)


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an EMA whose start is debiased, so the first point is kept."""
    out, last, num = [], 0.0, 0
    for v in values:
        last, num = last * weight + (1 - weight) * v, num + 1
        out.append(last / (1 - weight ** num))
    return out


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no display); matplotlib is the
    `plot` extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("matplotlib is not installed; pip install 'tubelet[plot]' (or "
                          "pip install matplotlib)") from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot(runs: list[Run], keys: list[str], out: Path) -> None:
    """One panel per key, every run in its own colour: raw (thin) and smoothed (thick)."""
    rows = max(1, math.ceil(len(keys) / NUM_COLUMNS))
    height = 3.6 * rows + 0.5
    fig = new_figure(figsize=(5 * NUM_COLUMNS, height))
    # fixed margins: a layout engine (constrained, tight) draws the figure twice, ~1/3 of the time
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.5 / height, top=1 - 0.6 / height,
                        wspace=0.25, hspace=0.9 / 3.6)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, NUM_COLUMNS, i + 1)
        for run, color in zip(runs, colors):
            steps, values = run.series(key)
            if not steps:
                continue
            marker = "o" if len(steps) < 20 else None  # eval points are few: show each
            if key == "train/lr":  # a schedule: nothing to smooth
                ax.plot(steps, values, color=color, label=run.name)
                continue
            ax.plot(steps, values, color=color, alpha=0.35, linewidth=1, marker=marker,
                    markersize=3)
            ax.plot(steps, smooth(values), color=color, linewidth=2, label=run.name)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.set_ylabel(key.rsplit("/", 1)[-1])
        # no "1e-5+1.07" offsets: the tick labels read as the values
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", title=None if key == "train/lr" else
                  f"thick: smoothed ({SMOOTHING}), thin: raw", title_fontsize="x-small")
    fig.suptitle(" vs ".join(run.name for run in runs))
    fig.savefig(out, dpi=100)


def _best(run: Run, key: str) -> str:
    steps, values = run.series(key)
    if not values:
        return "-"
    pick = min if lower_is_better(key) else max
    value = pick(values)
    return f"{value:.4g} @{steps[values.index(value)]}"


def _train_time(run: Run) -> float:
    """Seconds spent in training steps: each train row's mean step time over its steps
    (evaluation and checkpoint saves are not included)."""
    total, last = 0.0, 0
    for step, t in zip(*run.series("train/step_time")):
        total += t * max(step - last, 0)
        last = step
    return total


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def table(runs: list[Run], keys: list[str]) -> str:
    """A markdown table: per run, its steps, the best of every val/test metric (and the step),
    the time in training steps, clips/s and the model summary."""
    metrics = [k for k in keys if not k.startswith("train/")]
    head = ["run", "steps", *[f"best {k}" for k in metrics], "train time", "clips/s",
            "params", "GFLOPs/clip", "GFLOPs x views"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        s = run.summary
        seconds = _train_time(run)
        steps = max((r["step"] for r in run.rows), default=0)
        clips = s.get("clips_per_step")
        speed = f"{clips * steps / seconds:.1f}" if clips and seconds > 0 else "-"
        params = (s.get("parameters") or {}).get("total")
        flops = (f"{s['gflops']:.4g} ({s['gmacs']:.4g} GMACs)" if s.get("gflops") is not None
                 else "-")
        views = (f"{s['gflops_x_views']:.4g} ({s['views']} views)"
                 if s.get("gflops_x_views") is not None else "-")
        cells = [run.name, str(steps), *[_best(run, k) for k in metrics],
                 _duration(seconds) if seconds else "-", speed,
                 f"{params:,}" if params else "-", flops, views]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(run_dirs: list[Path], *, out: Path | None) -> str:
    """The markdown table; writes the curves to `out` (a PNG) when given."""
    for path in run_dirs:
        if not path.is_dir():
            raise ConfigError(f"{path}: not a directory; expected a run directory")
    runs = open_runs(run_dirs)
    keys = metric_keys(runs)
    if not keys:
        raise ConfigError(f"{', '.join(map(str, run_dirs))}: no metrics logged yet")
    if out is not None:
        plot(runs, keys, out)
    notes = [f"{run.name}: skipped {run.skipped} incomplete line(s) of metrics.jsonl (a run "
             "still writing)" for run in runs if run.skipped]
    return "\n".join([table(runs, keys), *notes])
