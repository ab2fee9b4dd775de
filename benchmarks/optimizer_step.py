"""AdamW step time at ViT-S: fused (tubelet's default where the device has the kernels) against
torch's per-tensor loop (torch's CPU default) and foreach, on the same parameters and
gradients; interleaved reps, medians, the ratio last.

    python benchmarks/optimizer_step.py [--reps 7] [--steps 20] [--model vit_small_patch16_224]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from tubelet.engine.optim import AdamW, param_groups
from tubelet.models import create_model

VARIANTS = {"fused": dict(fused=True), "per-tensor": dict(fused=False, foreach=False),
            "foreach": dict(fused=False, foreach=True)}


def step_time(model: torch.nn.Module, grads: list[torch.Tensor], steps: int, **kwargs) -> float:
    """Seconds per optimizer.step() after one warm-up step (which allocates the state)."""
    optimizer = AdamW(param_groups(model, weight_decay=0.05), lr=1e-4, **kwargs)
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=400)
    grads = [torch.randn_like(p) * 1e-3 for p in model.parameters()]
    got: dict[str, list[float]] = {k: [] for k in VARIANTS}
    names = list(VARIANTS)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            with torch.no_grad():
                saved = [p.clone() for p in model.parameters()]
            got[name].append(step_time(model, grads, args.steps, **VARIANTS[name]))
            with torch.no_grad():  # every variant steps from the same weights
                for p, s in zip(model.parameters(), saved):
                    p.copy_(s)
        print(f"rep {rep}: " + "  ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in got.items()),
              flush=True)
    print(f"{args.model}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}: medians "
          + ", ".join(f"{k} {statistics.median(v) * 1e3:.2f} ms" for k, v in got.items()))
    for name in ("per-tensor", "foreach"):
        ratio = statistics.median(a / b for a, b in zip(got[name], got["fused"]))
        print(f"{name} / fused step time (median of {args.reps}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
