"""Does contrastive pretraining help? A linear probe on the encoder that configs/debug/moco_tiny
(and simclr_tiny) pretrained, against the same probe on a random-init encoder, on a larger
synthetic set than the debug one (4 motion classes, --per-class train clips each).

    python benchmarks/contrastive_probe.py [--per-class 24] [--pretrain-epochs 20] [--probe-epochs 15]
        [--arms moco simclr]

Arms: `random` (configs/debug/linprobe_tiny.yaml, no model.pretrained), `moco` and `simclr`
(the probe with model.pretrained=<that run>). The probe is the recipe's frozen backbone +
BatchNorm1d(affine=False) + linear head, with AdamW at lr 0.01 instead of LARS (LARS's trust
ratio is made for huge batches). Prints the pretraining loss (first and last logged), each
probe's final val/acc1 over the test clips, the top-1 retrieval of a held-out clip's other
view (what the objective trains for), and last the ratio of probe accuracies pretrained / random.
A report script, not a test: minutes on a CPU.
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
DEBUG = REPO / "configs" / "debug"


def tubelet(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tubelet.cli", *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tubelet {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def retrieval(run_dir: Path, *, pretrained: bool) -> float:
    """Top-1 instance retrieval on the held-out clips: for each test video's first view, is
    its own second view (other time, other crop) the nearest of all second views, in the
    backbone's pooled features? What instance discrimination trains for; chance 1/#videos."""
    import torch

    sys.path.insert(0, str(REPO))
    from tubelet.build import build_dataset, build_model, schema
    from tubelet.config import load_config
    from tubelet.engine.checkpoint import load_checkpoint
    schema()  # registers every part
    cfg = load_config(run_dir / "config.yaml")
    node = {**cfg["data"]["train"], "dataset": {**cfg["data"]["train"]["dataset"], "subset": "test"}}
    data, _ = build_dataset(node, key="data.train")
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, load_pretrained=False)
    if pretrained:
        model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    model.eval()
    with torch.no_grad():
        items = [data[(i, 0)] for i in range(len(data))]
        f1 = model.features(torch.stack([x["video"] for x in items]))
        f2 = model.features(torch.stack([x["video2"] for x in items]))
    sim = torch.nn.functional.normalize(f1, dim=1) @ torch.nn.functional.normalize(f2, dim=1).T
    return float((sim.argmax(dim=1) == torch.arange(len(items))).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--probe-epochs", type=int, default=15)
    parser.add_argument("--arms", nargs="+", default=["moco", "simclr"],
                        choices=["moco", "simclr"], help="the pretraining recipes to probe")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="contrastive_probe_"))
    work.mkdir(parents=True, exist_ok=True)
    data = [f"num_train_per_class={args.per_class}", f"num_test_per_class={args.per_class // 2}",
            "root=data/synth_probe"]
    for arm in args.arms:
        tubelet("train", str(DEBUG / f"{arm}_tiny.yaml"), f"run.name={arm}", "data.batch_size=16",
                f"train.epochs={args.pretrain_epochs}", "train.log_interval=5",
                *(f"data.train.dataset.{d}" for d in data), cwd=work)
        losses = [r["train/loss"] for r in rows(work / "runs" / arm) if "train/loss" in r]
        print(f"{arm} pretraining: train/loss {losses[0]:.4f} (step 5) -> {losses[-1]:.4f} "
              f"(last), {len(losses)} logged")
    acc = {}
    for arm in ("random", *args.arms):
        pretrained = f"model.pretrained=runs/{arm}" if arm != "random" else "model.pretrained=null"
        tubelet("train", str(DEBUG / "linprobe_tiny.yaml"), f"run.name=probe_{arm}", pretrained,
                "optimizer.type=adamw", "optimizer.blr=null", "optimizer.lr=0.01",
                "data.batch_size=8", f"train.epochs={args.probe_epochs}",
                *(f"data.train.{d}" for d in data), cwd=work)
        evals = [r for r in rows(work / "runs" / f"probe_{arm}") if "val/acc1" in r]
        acc[arm] = evals[-1]["val/acc1"]
        print(f"probe on {arm:6s} encoder: val/acc1 {acc[arm]:.4f} "
              f"(best {max(r['val/acc1'] for r in evals):.4f}) over {args.per_class // 2 * 4} "
              f"test clips")
    for arm in args.arms:
        run_dir = work / "runs" / arm
        print(f"{arm}: top-1 retrieval of a held-out clip's other view: pretrained "
              f"{retrieval(run_dir, pretrained=True):.4f}, random init "
              f"{retrieval(run_dir, pretrained=False):.4f} "
              f"(chance {1 / (args.per_class // 2 * 4):.4f})")
    print(f"workdir {work}")
    for arm in args.arms:
        print(f"ratio val/acc1 {arm} / random: {acc[arm] / max(acc['random'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
