"""Exact resume under SIGKILL: kill a real `tubelet train` (debug recipe, a checkpoint every
step) at N random moments, half of them while a checkpoint is being written (a temp file is
open in checkpoints/), resume each with resume=auto, and check that every run ends
bit-identical to an uninterrupted one (every model and optimizer tensor, the counters, and
metrics.jsonl without wall-clock fields).

    python benchmarks/kill_resume.py [--kills 20] [--seed 0]

Not a timing benchmark: it prints each trial and, last, `exact K/N`. tests/engine/test_resume.py
runs a few of these in CI.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "debug" / "classify_tiny.yaml"
STEPS = 18


def cmd(root: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tubelet.cli", "train", str(RECIPE), f"data.train.root={root}",
            f"run.dir={run_dir}", "train.checkpoint_interval=1"]


def rows(run_dir: Path) -> list[dict]:
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in out]


def same_state(a: dict, b: dict) -> bool:
    if a["trainer"] != b["trainer"] or a["model"].keys() != b["model"].keys():
        return False
    if not all(torch.equal(v, b["model"][k]) for k, v in a["model"].items()):
        return False
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    return sa.keys() == sb.keys() and all(
        torch.equal(torch.as_tensor(v), torch.as_tensor(sb[n][k]))
        for n in sa for k, v in sa[n].items())


def kill(command: list[str], ckpt_dir: Path, *, step: int, during_write: bool,
         rng: random.Random) -> str:
    """Start, wait for checkpoint `step`, then SIGKILL: at once when a checkpoint temp file
    appears (during a write), or at a random point of the next ~20 ms."""
    from tubelet.engine.checkpoint import list_checkpoints
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not any(int(p.stem[5:]) >= step for p in list_checkpoints(ckpt_dir)):
            if proc.poll() is not None or time.monotonic() > deadline:
                return "ended before the kill"
            time.sleep(0.005)
        if during_write:
            while not any(e.name.endswith(".tmp") for e in os.scandir(ckpt_dir)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    return "ended before the kill"
            where = "during a checkpoint write"
        else:
            time.sleep(rng.uniform(0, 0.02))
            where = "mid-step"
        proc.send_signal(signal.SIGKILL)
        return where
    finally:
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from tubelet.config import load_config
    from tubelet.data.synth import ensure_synthetic_dataset
    from tubelet.engine.checkpoint import load_checkpoint
    tmp = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    node = load_config(RECIPE)["data"]["train"]
    root = ensure_synthetic_dataset(tmp / "data", num_classes=node["num_classes"],
                                    num_train_per_class=node["num_train_per_class"],
                                    num_test_per_class=node["num_test_per_class"],
                                    num_frames=node["video_frames"], size=node["size"])
    subprocess.run(cmd(root, tmp / "ref"), check=True, capture_output=True)
    reference = load_checkpoint(tmp / "ref" / "checkpoints" / "last.pt")
    rng, exact = random.Random(a.seed), 0
    for i in range(a.kills):
        run_dir = tmp / f"run{i}"
        step = rng.randint(1, STEPS - 3)
        where = kill(cmd(root, run_dir), run_dir / "checkpoints", step=step,
                     during_write=i % 2 == 1, rng=rng)
        last = run_dir / "checkpoints" / "last.pt"
        at = load_checkpoint(last)["trainer"]["step"] if last.exists() else None
        proc = subprocess.run(cmd(root, run_dir), capture_output=True, text=True)
        # a kill between a step file and its last.pt link resumes from the newer step file
        resumed = re.search(r"resumed from \S+ at epoch \d+ step (\d+)", proc.stderr)
        resumed = int(resumed.group(1)) if resumed else None
        ok = (proc.returncode == 0 and resumed is not None and resumed >= at and
              same_state(load_checkpoint(last), reference) and rows(run_dir) == rows(tmp / "ref"))
        exact += ok
        print(f"kill {i + 1:2d}: after checkpoint {step:2d}, {where}, last.pt at step {at}, "
              f"resumed at step {resumed}: "
              f"{'exact' if ok else 'DIFFERENT (exit %d)' % proc.returncode}", flush=True)
        if not ok:
            print(proc.stderr[-2000:])
    print(f"exact {exact}/{a.kills}")


if __name__ == "__main__":
    main()
