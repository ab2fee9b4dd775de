"""How long `tubelet report` takes for two runs, against starting Python and importing what it
must import (matplotlib's Agg canvas) in the same run.

    python benchmarks/report_speed.py [RUN_DIR RUN_DIR] [--reps 5]

Without run dirs it writes two quickstart-shaped ones (configs/quickstart.yaml: 600 steps, a
train row every 20 steps, an eval every 3 epochs of 40 steps, and a summary.json). Each rep runs,
interleaved, `python -c "import matplotlib.figure, matplotlib.backends.backend_agg"` and
`tubelet report A B --out report.png` as fresh processes; it prints the medians, then the
report's median and its ratio to the baseline last. The goal (issue 14): <= 3 s.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def quickstart_like(run: Path, *, lr: float) -> Path:
    """metrics.jsonl and summary.json shaped as the quickstart's (15 epochs x 40 steps)."""
    run.mkdir(parents=True)
    rows = []
    for step in range(20, 601, 20):
        rows.append({"step": step, "epoch": step / 40, "train/loss": 2.1 * math.exp(-step * lr),
                     "train/step_time": 0.2, "train/data_time": 0.02, "train/grad_norm": 1.0,
                     "train/lr": lr * min(1.0, step / 40)})
        if step % 120 == 0:
            rows.append({"step": step, "epoch": step // 40, "val/acc1": 1 - math.exp(-step * lr),
                         "val/mean_class_acc": 1 - math.exp(-step * lr)})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({
        "parameters": {"total": 459_752, "trainable": 459_752, "frozen": 0},
        "input_shape": [1, 3, 8, 40, 40], "gflops": 0.0366, "gmacs": 0.0183, "views": 1,
        "gflops_x_views": 0.0366, "clips_per_step": 16, "world_size": 1}))
    return run


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="two run dirs (default: synthesised)")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [r.resolve() for r in args.runs] or [
            quickstart_like(tmp / "quickstart_lr1e-3", lr=1e-3),
            quickstart_like(tmp / "quickstart_lr3e-3", lr=3e-3)]
        baseline_cmd = [sys.executable, "-c",
                        "import matplotlib.figure, matplotlib.backends.backend_agg"]
        report_cmd = [sys.executable, "-m", "tubelet.cli", "report", *map(str, runs),
                      "--out", str(tmp / "report.png")]
        timed(report_cmd, tmp)  # warm the page cache and matplotlib's font cache
        base, report = [], []
        for _ in range(args.reps):
            base.append(timed(baseline_cmd, tmp))
            report.append(timed(report_cmd, tmp))
    b, r = statistics.median(base), statistics.median(report)
    print(f"python + matplotlib import: median {b:.2f} s over {args.reps} reps")
    print(f"tubelet report, {len(runs)} runs: median {r:.2f} s over {args.reps} reps "
          f"(min {min(report):.2f}, max {max(report):.2f})")
    print(f"report {r:.2f} s = {r / b:.2f}x python + matplotlib import (goal: <= 3 s)")


if __name__ == "__main__":
    main()
