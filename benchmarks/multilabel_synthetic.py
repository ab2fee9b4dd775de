"""Does the multi-label task learn? configs/debug/multilabel_tiny.yaml on a larger synthetic
multi-label set (two motions per clip, --classes motion classes, --per-class clips per class),
against chance: the mAP of random scores on the same test labels.

    python benchmarks/multilabel_synthetic.py [--classes 6] [--per-class 16] [--epochs 20] [key=value ...]

Chance is measured, not assumed: the mean over 1000 draws of uniform random scores of the mAP
(tubelet.multilabel_metrics, equal to scikit-learn's) on the test set's labels (about the
label prevalence, 2 / classes). Prints the eval rows, the chance level and, last, the ratio
final val/map / chance. A report script, not a test: minutes on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tubelet.multilabel_metrics import per_class_ap  # noqa: E402


def chance_map(labels: np.ndarray, draws: int = 1000) -> float:
    rng = np.random.default_rng(0)
    maps = [np.nanmean(per_class_ap(torch.from_numpy(rng.random(labels.shape)),
                                    torch.from_numpy(labels)).numpy()) for _ in range(draws)]
    return float(np.mean(maps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="more recipe overrides (key=value)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="multilabel_"))
    work.mkdir(parents=True, exist_ok=True)
    k = args.classes
    cmd = [sys.executable, "-m", "tubelet.cli", "train",
           str(REPO / "configs" / "debug" / "multilabel_tiny.yaml"), "run.name=ml",
           "data.train.root=data/synth_ml", f"data.train.num_classes={k}",
           f"data.train.num_train_per_class={args.per_class}",
           f"data.train.num_test_per_class={args.per_class // 2}", f"model.num_classes={k}",
           f"task.num_classes={k}", f"train.epochs={args.epochs}", "train.eval_interval=5",
           *args.overrides]
    proc = subprocess.run(cmd, cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (work / "runs" / "ml" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val/map" in r]
    for r in evals:
        print(f"epoch {r['epoch']:3d}: val/map {r['val/map']:.4f} recall1 {r['val/recall1']:.4f} "
              f"recall2 {r['val/recall2']:.4f}")
    labels = []
    for line in (work / "data" / "synth_ml" / "test.txt").read_text().splitlines():
        target = np.zeros(k)
        target[[int(c) for c in line.split()[-1].split(",")]] = 1
        labels.append(target)
    chance = chance_map(np.stack(labels))
    print(f"chance mAP (random scores, {len(labels)} test clips, {k} classes): {chance:.4f}")
    print(f"ratio final val/map / chance: {evals[-1]['val/map'] / chance:.3f}")


if __name__ == "__main__":
    main()
