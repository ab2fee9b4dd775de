"""DDP scaling: training throughput of 1 process vs 2 DDP processes (torchrun, gloo, CPU).

    python benchmarks/ddp_scaling.py [--reps 5] [--steps 30] [--batch 16]

Each repetition launches `torchrun --nproc-per-node=1` and `--nproc-per-node=2` (alternating
which goes first) on the quickstart-sized video ViT with in-memory clips and batch `--batch`
per process (weak scaling: the global batch doubles with 2 processes), each process with
`--threads` intra-op threads (default 1: one core per process, so the ideal ratio is 2.0; with
more threads than free cores, OpenMP's spinning threads collapse on a shared machine). Throughput is measured inside the workers after warm-up, so process start-up and
rendezvous are not counted. Prints per-repetition clips/s, and last the median ratio
2-process / 1-process throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUM_CLASSES, WARMUP = 8, 5


def worker(steps: int, batch: int, out: Path) -> None:
    """One rank: DDP-wrapped ViT, `steps` timed SGD steps on random clips."""
    import torch
    import torch.nn.functional as F

    from tubelet import distributed as dist
    from tubelet.engine.parallel import wrap_model
    from tubelet.models import create_model

    device = dist.init_distributed(device=torch.device("cpu"), backend="gloo")
    torch.manual_seed(0)
    model = create_model("vit", img_size=32, patch_size=8, num_frames=8, tubelet_size=2,
                         embed_dim=96, depth=4, num_heads=4, global_pool="avg",
                         num_classes=NUM_CLASSES)
    model = wrap_model(model, strategy="ddp", device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(dist.get_rank())
    video = torch.randn(batch, 3, 8, 32, 32, generator=g)  # (B, C, T, H, W)
    label = torch.randint(0, NUM_CLASSES, (batch,), generator=g)

    def step() -> None:
        F.cross_entropy(model(video), label).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    elapsed = time.perf_counter() - start
    if dist.is_main():
        clips = steps * batch * dist.get_world_size()
        out.write_text(json.dumps({"clips_per_s": clips / elapsed}))
    dist.shutdown()


def launch(nproc: int, *, steps: int, batch: int, threads: int, tmp: Path) -> float:
    out = tmp / f"result_{nproc}.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", __file__, "--worker", "--steps", str(steps),
           "--batch", str(batch), "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=600)
    return json.loads(out.read_text())["clips_per_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run")
    p.add_argument("--batch", type=int, default=16, help="clips per process per step")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.steps, args.batch, args.out)
        return
    one, two, ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            # alternate which side goes first, so drift on a noisy machine hits both equally
            got = {}
            for nproc in ((1, 2) if rep % 2 == 0 else (2, 1)):
                got[nproc] = launch(nproc, steps=args.steps, batch=args.batch,
                                    threads=args.threads, tmp=Path(tmp))
            one.append(got[1])
            two.append(got[2])
            ratios.append(got[2] / got[1])
            print(f"rep {rep}: 1 process {got[1]:.1f} clips/s  2 processes {got[2]:.1f} clips/s  "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"median throughput: 1 process {statistics.median(one):.1f} clips/s, "
          f"2 processes {statistics.median(two):.1f} clips/s")
    print(f"2-process / 1-process throughput ratio (median of {args.reps}): "
          f"{statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
