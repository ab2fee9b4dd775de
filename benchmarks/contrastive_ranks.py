"""2 ranks x batch 4 against 1 process x batch 8, end to end through the CLI: SimCLR
(configs/debug/simclr_tiny.yaml) and MoCo v3 with a MoCo v2 queue (moco_tiny.yaml,
model.queue_size=24), 6 SGD steps each (SGD, as configs/debug/ddp_tiny.yaml: Adam would turn
rounding noise into full-size updates), torchrun with gloo on CPU.

    python benchmarks/contrastive_ranks.py [--workdir DIR]

Prints, per recipe: the largest difference of any weight (the momentum encoder's separately),
of the per-step train/loss (relative), whether all weights are bitwise equal, and for the queue
its largest elementwise difference and its largest distance as a set of rows (the gather puts
rank 0's share of the batch first while the one process keeps the sampler's order, so the same
keys are queued in another order; the loss does not depend on it). A report script: the
gradient-level equality is tests/distributed/test_contrastive_ranks.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def launch(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def losses(run_dir: Path) -> list[float]:
    return [r["train/loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                         .splitlines()) if "train/loss" in r]


def main() -> None:
    import torch
    from tubelet.data.synth import ensure_synthetic_dataset
    from tubelet.engine.checkpoint import load_checkpoint
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="contrastive_ranks_"))
    root = ensure_synthetic_dataset(work / "synth_tiny", num_classes=4, num_train_per_class=6,
                                    num_test_per_class=3, num_frames=8, size=24)
    common = [f"data.train.dataset.root={root}", "optimizer.type=sgd", "optimizer.lr=0.05",
              "optimizer.momentum=0.9", "train.epochs=2", "train.threads=1"]
    for name, extra in (("simclr", []), ("moco", ["model.queue_size=24"])):
        recipe = str(REPO / "configs" / "debug" / f"{name}_tiny.yaml")
        one, two = work / f"{name}_one", work / f"{name}_two"
        launch([sys.executable, "-m", "tubelet.cli", "train", recipe, f"run.dir={one}",
                "data.batch_size=8", *common, *extra], work)
        launch([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=2", "-m", "tubelet.cli", "train", recipe, f"run.dir={two}",
                "data.batch_size=4", *common, *extra], work)
        a = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
        b = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
        keys = [k for k in a if k != "queue"]
        diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in keys}
        la, lb = losses(one), losses(two)
        print(f"{name}: max |weight diff| {max(diff.values()):.3g}"
              + (f" (momentum encoder {max(v for k, v in diff.items() if k.startswith('momentum.')):.3g})"
                 if any(k.startswith("momentum.") for k in keys) else "")
              + f", bitwise equal: {all(torch.equal(a[k], b[k]) for k in a)}, "
              f"max relative train/loss diff {max(abs(x - y) / abs(x) for x, y in zip(la, lb)):.3g} "
              f"over {len(la)} steps")
        if "queue" in a:
            print(f"{name}: queue elementwise max diff {(a['queue'] - b['queue']).abs().max():.3g}, "
                  f"as a set of rows {torch.cdist(b['queue'], a['queue']).min(1).values.max():.3g}")


if __name__ == "__main__":
    main()
