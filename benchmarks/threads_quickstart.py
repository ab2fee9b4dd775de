"""`train.threads: auto` against torch's default thread count, on the quickstart, while other
processes compete for the cores (`yes > /dev/null`, as on a shared machine).

    python benchmarks/threads_quickstart.py [--reps 3] [--load 1] [--epochs 1]

Each repetition runs `tubelet train configs/quickstart.yaml train.epochs=E` once per arm, in a
fresh process and run dir, alternating which arm goes first. The synthetic dataset is written
once beforehand, so both arms time the same work: startup, training, the final eval and the
checkpoint. "torch default" passes `train.threads=N` with N what torch picks in a fresh
process here (`torch.get_num_threads()`), i.e. what every run got before `auto` existed.
Prints each run's wall time, and last the median ratio default / auto.
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
RECIPE = REPO / "configs" / "quickstart.yaml"


def tubelet(*args: str, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tubelet.cli", *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tubelet {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return time.perf_counter() - start


def torch_default_threads() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--load", type=int, default=1, help="competing `yes > /dev/null` processes")
    p.add_argument("--epochs", type=int, default=1, help="train.epochs for both arms")
    args = p.parse_args()
    default = torch_default_threads()
    arms = {"auto": "train.threads=auto", "torch default": f"train.threads={default}"}
    print(f"torch default threads here: {default}; cores usable: {len(os.sched_getaffinity(0))}; "
          f"competing processes: {args.load}", flush=True)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        tubelet("data", "synth", "data/synth_actions", cwd=cwd)  # the recipe's root, made once
        load = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(args.load)]
        try:
            for rep in range(args.reps):
                order = list(arms) if rep % 2 == 0 else list(reversed(arms))
                for arm in order:
                    run = f"run.dir=runs/{arm.replace(' ', '_')}{rep}"
                    times[arm].append(tubelet("train", str(RECIPE), f"train.epochs={args.epochs}",
                                              "train.progress=false", arms[arm], run, cwd=cwd))
                    print(f"rep {rep} {arm}: {times[arm][-1]:.1f} s", flush=True)
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
    for arm, ts in times.items():
        print(f"{arm}: median {statistics.median(ts):.1f} s of {', '.join(f'{t:.1f}' for t in ts)}")
    ratios = [d / a for d, a in zip(times["torch default"], times["auto"])]
    print(f"wall time torch default / auto (median of {args.reps}): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
