"""Does contrastive pretraining help? A linear probe on the encoder that configs/debug/moco_tiny
(and simclr_tiny) pretrained, against the same probe on a random-init encoder, on a larger
synthetic set than the debug one (4 motion classes, --per-class train clips each).

    python benchmarks/contrastive_probe.py [--per-class 24] [--pretrain-epochs 20] [--probe-epochs 15]
        [--frames 4 --stride 2] [--seeds 0 1 2] [--arms moco simclr]
        [--set task.reversed_negatives=true ...]

Arms: `random` (configs/debug/linprobe_tiny.yaml, no model.pretrained), `moco` and `simclr`
(the probe with model.pretrained=<that run>). The probe is the recipe's frozen backbone +
BatchNorm1d(affine=False) + linear head, with AdamW at lr 0.01 instead of LARS (LARS's trust
ratio is made for huge batches). Prints the pretraining loss (first and last logged), each
probe's final val/acc1 over the test clips, the top-1 retrieval of a held-out clip's other
view (what the objective trains for) and how often that view is nearer than its own reversal
(what `task.reversed_negatives` trains for), and last the ratio of probe accuracies pretrained / random,
per seed (each seed: its own pretraining, its own random init, its own probe runs).
`--frames`/`--stride` set the clip of every arm alike (data and model.backbone.num_frames).
`--set` passes recipe overrides to the pretraining runs only.
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


def retrieval(run_dir: Path, *, pretrained: bool) -> tuple[float, float]:
    """On the held-out clips, in the backbone's pooled features: (top-1 instance retrieval: is
    a test video's second view the nearest of all second views to its first view, chance
    1/#videos; the share of videos whose first view is nearer its second view than to that
    view played backwards, chance 1/2: what time-reversed negatives train for)."""
    import torch
    import torch.nn.functional as F

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
        v1, v2 = (torch.stack([x[k] for x in items]) for k in ("video", "video2"))
        f1, f2, back = (F.normalize(model.features(v), dim=1) for v in (v1, v2, v2.flip(2)))
    top1 = (f1 @ f2.T).argmax(dim=1) == torch.arange(len(items))
    order = (f1 * f2).sum(1) > (f1 * back).sum(1)
    return float(top1.float().mean()), float(order.float().mean())


def geometry(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The clip and encoder overrides, the same for every arm: (pretraining's, the probe's)."""
    video_frames = max(8, (args.frames - 1) * args.stride + 1)
    video_size = args.video_size or args.size * 3 // 2
    data = [f"num_train_per_class={args.per_class}", f"num_test_per_class={args.per_class // 2}",
            f"video_frames={video_frames}", f"num_frames={args.frames}", f"stride={args.stride}",
            f"size={video_size}",
            f"root=data/synth_probe_{args.per_class}_{video_frames}_{video_size}"]
    model = [f"model.backbone.num_frames={args.frames}", f"model.backbone.img_size={args.size}",
             f"model.backbone.embed_dim={args.embed_dim}", f"model.backbone.depth={args.depth}",
             f"model.backbone.num_heads={max(2, args.embed_dim // 32)}"]
    pretrain = [*(f"data.train.dataset.{d}" for d in data), *model,
                *(f"data.train.{views}.0.size={args.size}" for views in ("transforms", "transforms2"))]
    probe = [*(f"data.train.{d}" for d in data), f"data.val.num_frames={args.frames}",
             f"data.val.stride={args.stride}", f"data.train.transforms.0.size={args.size}",
             f"data.val.transforms.0.size={args.size}", *model]
    return pretrain, probe


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Pretrain each arm and probe it and the random-init encoder, all with `seed`."""
    pretrain, probe = geometry(args)
    for arm in args.arms:
        recipe = DEBUG / f"{arm}_tiny.yaml"
        if "transforms2:" not in recipe.read_text():  # both views share `transforms` there
            pretrain = [o for o in pretrain if ".transforms2." not in o]
        tubelet("train", str(recipe), f"run.name={arm}_s{seed}", f"seed={seed}",
                "data.batch_size=16", f"train.epochs={args.pretrain_epochs}",
                f"model.norm={args.norm}", "train.log_interval=5", *pretrain, *args.set, cwd=work)
        losses = [r["train/loss"] for r in rows(work / "runs" / f"{arm}_s{seed}")
                  if "train/loss" in r]
        print(f"seed {seed} {arm} pretraining: train/loss {losses[0]:.4f} (step 5) -> "
              f"{losses[-1]:.4f} (last), {len(losses)} logged", flush=True)
    acc = {}
    test_clips = args.per_class // 2 * 4
    for arm in ("random", *args.arms, *(["supervised"] if args.supervised else [])):
        pretrained = f"model.pretrained=runs/{arm}_s{seed}" if arm in args.arms else \
            "model.pretrained=null"
        # supervised: the same encoder and head trained end to end, twice the epochs
        how = (["model.freeze_backbone=false", "optimizer.lr=0.001",
                f"train.epochs={2 * args.probe_epochs}"] if arm == "supervised" else
               ["optimizer.lr=0.01", f"train.epochs={args.probe_epochs}"])
        name = f"probe_{arm}_s{seed}"
        tubelet("train", str(DEBUG / "linprobe_tiny.yaml"), f"run.name={name}", f"seed={seed}",
                pretrained, "optimizer.type=adamw", "optimizer.blr=null", *how,
                "data.batch_size=8", *probe, cwd=work)
        evals = [r for r in rows(work / "runs" / name) if "val/acc1" in r]
        acc[arm] = evals[-1]["val/acc1"]
        print(f"seed {seed} {'training' if arm == 'supervised' else 'probe on'} {arm:6s} encoder: val/acc1 {acc[arm]:.4f} "
              f"(best {max(r['val/acc1'] for r in evals):.4f}) over {test_clips} test clips",
              flush=True)
    for arm in args.arms:
        run_dir = work / "runs" / f"{arm}_s{seed}"
        (top1, order), (top1_0, order_0) = (retrieval(run_dir, pretrained=p) for p in (True, False))
        print(f"seed {seed} {arm}: top-1 retrieval of a held-out clip's other view: pretrained "
              f"{top1:.4f}, random init {top1_0:.4f} (chance {1 / test_clips:.4f}); other view "
              f"nearer than its reversal: {order:.4f} vs {order_0:.4f} (chance 0.5)", flush=True)
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--probe-epochs", type=int, default=15)
    parser.add_argument("--frames", type=int, default=4,
                        help="clip length of every arm (pretraining, probes, the model)")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=16, help="the crop (model input) size")
    parser.add_argument("--video-size", type=int, default=None,
                        help="the synthetic videos' size (default 1.5 x --size)")
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--supervised", action="store_true",
                        help="also train the same encoder end to end with the labels: the "
                             "ceiling a probe could reach on this geometry")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--norm", default="bn", choices=["bn", "ln", "none"],
                        help="the projector/predictor norm while pretraining (the papers' bn; "
                             "the debug recipes' ln, kept there for exact rank equivalence, "
                             "collapses on this set: the loss sits at chance from step 15)")
    parser.add_argument("--arms", nargs="*", default=["moco", "simclr"],
                        choices=["moco", "simclr"], help="the pretraining recipes to probe")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for the pretraining runs, e.g. "
                             "task.reversed_negatives=true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="contrastive_probe_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {seed: one_seed(seed, args, work) for seed in args.seeds}
    print(f"workdir {work}")
    for arm in ("random", *args.arms, *(["supervised"] if args.supervised else [])):
        print(f"val/acc1 {arm:6s} by seed: "
              + " ".join(f"{results[s][arm]:.4f}" for s in args.seeds) + f"  mean {sum(results[s][arm] for s in args.seeds) / len(args.seeds):.4f}")
    for arm in args.arms:
        ratios = [results[s][arm] / max(results[s]["random"], 1e-9) for s in args.seeds]
        print(f"ratio val/acc1 {arm} / random, by seed: " + " ".join(f"{r:.3f}" for r in ratios)
              + f"; median {sorted(ratios)[len(ratios) // 2]:.3f}")


if __name__ == "__main__":
    main()
