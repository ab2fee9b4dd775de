"""How fast a recipe error is answered, against `python -c "import torch"` in the same run.

    python benchmarks/validation_latency.py [--reps 5] [--markdown]

For every bad input of issue 10 (tests/tools/bad_inputs.py) it runs `tubelet config RECIPE
OVERRIDES` in a fresh empty directory, `--reps` times interleaved with the torch import, and
prints: exit code, the stderr line, median wall time, files left behind. Then every hostile
recipe (tests/tools/hostile.py): exit code, median wall time and peak RSS (Linux keeps the
high-water mark across fork+exec, so it is at least this process's own RSS, ~20 MB). The schema cache is
warmed first (one valid `tubelet config`), as it is after any run of the installed package.
The last line is the ratio the issue asks about: median error answer minus torch's import.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.tools.bad_inputs import BAD_INPUTS  # noqa: E402
from tests.tools.hostile import hostile_recipes  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str, int]:
    """(wall seconds, exit code, stderr, peak RSS in KiB) of one process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t, proc.returncode, err, usage.ru_maxrss


def tubelet(*args: str) -> list[str]:
    return [sys.executable, "-m", "tubelet.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", choices=("bad", "hostile"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timed(tubelet("config", str(REPO / "configs" / "quickstart.yaml")), tmp)  # warm cache
        torch_times, rows = [], []
        for recipe, overrides, _ in BAD_INPUTS if args.only != "hostile" else []:
            times = []
            for rep in range(args.reps):
                cwd = tmp / f"run{len(rows)}_{rep}"
                cwd.mkdir()
                torch_times.append(timed([sys.executable, "-c", "import torch"], tmp)[0])
                wall, rc, err, _ = timed(tubelet("config", str(REPO / "configs" / recipe),
                                                 *overrides), cwd)
                times.append(wall)
                left = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
            rows.append((" ".join(overrides), rc, err.strip(), statistics.median(times), left))
        print("| bad input | exit | the line | median s | files left |")
        print("|---|---|---|---|---|")
        for what, rc, line, med, left in rows:
            print(f"| `{what[:60]}` | {rc} | `{line}` | {med:.2f} | {left or 'none'} |")

        print("\n| hostile recipe | exit | median s | peak RSS MB | the line |")
        print("|---|---|---|---|---|")
        hostile = hostile_recipes(tmp / "hostile")
        for name, (recipe, _) in hostile.items() if args.only != "bad" else []:
            runs = [timed(tubelet("config", str(recipe)), tmp) for _ in range(args.reps)]
            med = statistics.median(r[0] for r in runs)
            rss = max(r[3] for r in runs) / 1024
            line = runs[0][2].strip().replace(str(tmp), "$TMP")
            print(f"| {name} | {runs[0][1]} | {med:.2f} | {rss:.0f} | `{line[:110]}` |")

    if not rows:
        return
    answer = statistics.median(r[3] for r in rows)
    torch_s = statistics.median(torch_times)
    print(f"\nload: {os.getloadavg()[0]:.2f} (1 min avg); import torch median {torch_s:.2f} s; "
          f"error answered median {answer:.2f} s (max {max(r[3] for r in rows):.2f} s)")
    print(f"error answer - torch import = {answer - torch_s:+.2f} s (goal: <= +1.5 s); "
          f"ratio {answer / torch_s:.2f}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    main()
