"""What one eval costs with the K400 recipe's one-view `data.val` against the 5 clips x 3 crops
it used to validate with at every eval (now its `data.test`, run once at the end).

    python benchmarks/eval_views.py [--reps 5] [--test-per-class 6]

The recipe is configs/videomae/finetune_vit_base_k400.yaml itself, read with overrides that
only point it at a synthetic Kinetics layout (H.264 MP4s, 8 classes, 64x64 px, 32 frames at
8 fps; tubelet.data.synth_layouts) and shrink the model to a 1-block ViT on 4 x 32^2 clips, so
the views, sampling and transforms are the recipe's while the run fits a CPU. Each repetition
times one full eval pass (`run_eval`: decode, transforms, forward, metrics) per arm, arms
alternating which goes first. Prints clips per eval, each arm's median seconds per eval, and
last the ratio 5x3 / one view. Every view is its own item (decoded, transformed and
forwarded; the square frames make the 3 crops alike in content, not in cost), so the work
grows with the 15x clips; the per-eval fixed costs (loader start,
metric reduction) keep the measured ratio below 15.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECIPE = REPO / "configs" / "videomae" / "finetune_vit_base_k400.yaml"


def overrides(root: Path) -> list[str]:
    split = [f"annotations={root / 'val.csv'}", f"root={root / 'videos'}",
             f"classes_from={root / 'train.csv'}", "num_frames=4", "stride=2"]
    return [f"data.train.annotations={root / 'train.csv'}", f"data.train.root={root / 'videos'}",
            *[f"data.{s}.{kv}" for s in ("val", "test") for kv in split],
            "data.val.transforms[0].size=32", "data.val.transforms[1].size=32",
            "data.test.transforms[0].size=32", "data.num_workers=0", "data.val_batch_size=16",
            "model.type=vit", "model.img_size=32", "model.patch_size=16", "model.embed_dim=64",
            "model.depth=1", "model.num_heads=2", "model.num_frames=4", "model.num_classes=8",
            "train.device=cpu", "train.amp=none"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--test-per-class", type=int, default=6, help="val videos per class")
    args = p.parse_args()
    import torch

    from tubelet.build import DataOptions, build_eval_loader, build_model
    from tubelet.config import load_config
    from tubelet.data.synth_layouts import ensure_layout
    from tubelet.engine.evaluate import run_eval
    from tubelet.registry import TASKS, build
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_layout(Path(tmp) / "kinetics", layout="kinetics", num_classes=8,
                             num_train_per_class=1, num_test_per_class=args.test_per_class,
                             num_frames=32, size=64, fps=8)
        cfg = load_config(RECIPE, overrides(root))
        data = DataOptions(**cfg["data"])
        model = build_model(cfg, load_pretrained=False).eval()
        task = build(cfg["task"], TASKS)
        loaders = {arm: build_eval_loader(data, split=split, seed=0, device=torch.device("cpu"))
                   for arm, split in (("1 view (data.val)", "val"), ("5x3 (data.test)", "test"))}
        times: dict[str, list[float]] = {arm: [] for arm in loaders}
        for arm, (loader, dataset) in loaders.items():
            print(f"{arm}: {len(dataset)} clips of {dataset.num_videos()} videos per eval")
        for rep in range(args.reps):
            order = list(loaders) if rep % 2 == 0 else list(reversed(loaders))
            for arm in order:
                start = time.perf_counter()
                metrics = run_eval(model, task, loaders[arm][0], device=torch.device("cpu"))
                times[arm].append(time.perf_counter() - start)
                print(f"rep {rep} {arm}: {times[arm][-1]:.3f} s  "
                      f"(acc1 {metrics['val/acc1']:.3f})", flush=True)
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    for arm, m in medians.items():
        print(f"{arm}: median {m:.3f} s per eval over {args.reps} reps")
    one, full = medians.values()
    print(f"ratio 5x3 / 1 view per eval: {full / one:.2f}x")


if __name__ == "__main__":
    main()
