"""FSDP2 peak memory per rank: VideoMAE pretraining sharded per block vs as one unit
(torchrun, 2 gloo ranks on CPU).

    python benchmarks/fsdp_units.py [--reps 3] [--steps 3] [--depth 12] [--dim 768]

Each repetition launches two 2-rank runs, alternating which goes first: `units` (the default
rule: every encoder and decoder block is an FSDP2 unit, then the root) and `one unit` (the
model's `fsdp_units()` returns nothing, so the whole model is one unit, which is what tubelet
did for MAE/VideoMAE before the rule). Each rank builds a ViT-B-sized VideoMAE (encoder
`--depth` x `--dim`, decoder 4 x 384, 8 x 112 x 112 clips, tube mask 0.9), shards it, and runs
`--steps` AdamW steps of the MAE loss on random clips (batch 2 per rank), then reports its peak
RSS (`ru_maxrss`) and its RSS before the first step. Prints per-rank medians, and last the
ratio of the peak growth (peak - RSS before training), one unit / per-block units.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def worker(mode: str, steps: int, depth: int, dim: int, out: Path) -> None:
    import resource

    import torch

    from tubelet import distributed as dist
    from tubelet.engine.parallel import wrap_model
    from tubelet.models import create_model
    from tubelet.tasks.mae_pretrain import MAEPretrainTask

    device = dist.init_distributed(device=torch.device("cpu"), backend="gloo")
    torch.manual_seed(0)
    model = create_model("mae", img_size=112, patch_size=16, num_frames=8, tubelet_size=2,
                         embed_dim=dim, depth=depth, num_heads=dim // 64, decoder_embed_dim=384,
                         decoder_depth=4, decoder_num_heads=6, mask_type="tube", mask_ratio=0.9)
    if mode == "one_unit":
        model.fsdp_units = lambda: []  # the rule's answer for a model that names no units
    model = wrap_model(model, strategy="fsdp", device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    task = MAEPretrainTask(norm_pix_loss=True)
    before = rss_mb()
    for _ in range(steps):
        video = torch.randn(2, 3, 8, 112, 112)
        task.loss(model, {"video": video}).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / f"{mode}.rank{dist.get_rank()}.json").write_text(json.dumps({"before": before,
                                                                         "peak": peak}))
    dist.shutdown()


def launch(mode: str, args: argparse.Namespace, out: Path) -> dict[int, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           __file__, "--worker", mode, "--steps", str(args.steps), "--depth", str(args.depth),
           "--dim", str(args.dim), "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=1800)
    return {r: json.loads((out / f"{mode}.rank{r}.json").read_text()) for r in (0, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--worker")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.depth, args.dim, args.out)
        return
    results: dict[str, list[dict[int, dict]]] = {"units": [], "one_unit": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["units", "one_unit"] if rep % 2 == 0 else ["one_unit", "units"]
            for mode in order:
                results[mode].append(launch(mode, args, Path(tmp)))
                r = results[mode][-1]
                print(f"rep {rep} {mode:8s}: " + ", ".join(
                    f"rank {k} peak {v['peak']:.0f} MB (before training {v['before']:.0f} MB)"
                    for k, v in r.items()), flush=True)
    growth = {}
    print("\nmedian over reps     rank   peak RSS MB   RSS before MB   peak growth MB")
    for mode, runs in results.items():
        for rank in (0, 1):
            peak = statistics.median(run[rank]["peak"] for run in runs)
            before = statistics.median(run[rank]["before"] for run in runs)
            growth[mode, rank] = statistics.median(run[rank]["peak"] - run[rank]["before"]
                                                   for run in runs)
            print(f"{mode:20s} {rank:4d} {peak:12.0f} {before:15.0f} {growth[mode, rank]:15.0f}")
    for rank in (0, 1):
        print(f"rank {rank}: peak growth one unit / per-block units = "
              f"{growth['one_unit', rank] / growth['units', rank]:.2f}")


if __name__ == "__main__":
    main()
