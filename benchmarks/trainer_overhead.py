"""Trainer overhead: the same tiny video ViT and data through a hand-written loop and through
`Trainer.fit` (metrics.jsonl, TensorBoard and the rich progress bar on), each a separate run,
interleaved, and Fabric beside them when `lightning` is installed (not a tubelet dependency).
`--floor` runs benchmarks/step_floor.py instead: the per-step cost on a tiny MLP, paired inside
one run (its arguments pass through), which is what makes a difference of tens of us visible.

    python benchmarks/trainer_overhead.py [--reps 7] [--steps 60] [--threads 1]
    python benchmarks/trainer_overhead.py --floor [--blocks 60] [--block 100] [--threads 1]

Prints per-repetition figures, and last the median ratio (or us/step over the raw loop). The
video-ViT ratio comes twice: over the whole run (tubelet's logger start-up and its fsynced
end-of-epoch checkpoint included, which a run of --steps pays once) and in the steady state
(the same window in every loop: after step 5 to the last step).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tubelet.data.loader import ResumableSampler, build_loader
from tubelet.data.seeding import split_key
from tubelet.engine.optim import param_groups
from tubelet.engine.schedule import cosine_lr
from tubelet.engine.hooks import Hook
from tubelet.engine.trainer import Trainer
from tubelet.loggers import RunLogger, setup_text_log
from tubelet.models import create_model
from tubelet.tasks.classification import ClassificationTask

BATCH, LR, NUM_CLASSES = 16, 1e-3, 8


class InMemoryClips(Dataset):
    """Pre-made clips, so the comparison measures the loop, not decoding."""

    def __init__(self, num_samples: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.video = torch.randn(num_samples, 3, 8, 32, 32, generator=g)  # (N, C, T, H, W)
        self.label = torch.randint(0, NUM_CLASSES, (num_samples,), generator=g)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, key):
        index, _ = split_key(key)
        return {"video": self.video[index], "label": int(self.label[index]), "index": index}


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit", img_size=32, patch_size=8, num_frames=8, tubelet_size=2,
                        embed_dim=96, depth=4, num_heads=4, global_pool="avg",
                        num_classes=NUM_CLASSES)


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    # tubelet's default in every loop (fused where the device has it), so the loops differ
    # only in what wraps the step
    from tubelet.engine.optim import AdamW
    return AdamW(param_groups(model, weight_decay=0.05), lr=LR)


def make_loader(dataset: Dataset):
    sampler = ResumableSampler(len(dataset), batch_size=BATCH, seed=0)
    return build_loader(dataset, sampler=sampler), sampler


VIT_WARMUP = 5  # steps before the steady-state window opens (first-call allocations)


def _rates(start: float, opened: float, steps: int) -> tuple[float, float]:
    """(steady clips/s over the steps after VIT_WARMUP, whole-run clips/s)."""
    now = time.perf_counter()
    return (steps - VIT_WARMUP) * BATCH / (now - opened), steps * BATCH / (now - start)


def hand_loop(dataset: Dataset) -> tuple[float, float]:
    """What a user writes by hand: the same lr schedule, clipping and AdamW; no logging."""
    model, loader = make_model(), make_loader(dataset)[0]
    optimizer = make_optimizer(model)
    total = len(loader)
    start = time.perf_counter()
    model.train()
    for step, batch in enumerate(loader):
        if step == VIT_WARMUP:
            opened = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, base_lr=LR, total_steps=total, warmup_steps=total // 10)
        loss = F.cross_entropy(model(batch["video"]), batch["label"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return _rates(start, opened, total)


def fabric_loop(dataset: Dataset) -> tuple[float, float]:
    """The hand-written loop under Lightning Fabric (no logger, no progress bar)."""
    from lightning.fabric import Fabric
    fabric = Fabric(accelerator="cpu", devices=1)
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model))
    loader = fabric.setup_dataloaders(make_loader(dataset)[0], use_distributed_sampler=False)
    total = len(loader)
    start = time.perf_counter()
    model.train()
    for step, batch in enumerate(loader):
        if step == VIT_WARMUP:
            opened = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, base_lr=LR, total_steps=total, warmup_steps=total // 10)
        loss = F.cross_entropy(model(batch["video"]), batch["label"])
        fabric.backward(loss)
        fabric.clip_gradients(model, optimizer, max_norm=1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return _rates(start, opened, total)


class _Window(Hook):
    """Opens the steady-state window after step VIT_WARMUP and closes it after the last step,
    before fit()'s end-of-epoch checkpoint (which the whole-run figure includes)."""

    def after_step(self, trainer) -> None:
        if trainer.step == VIT_WARMUP:
            self.opened = time.perf_counter()
        elif trainer.step == trainer.total_steps:
            self.steady = (trainer.total_steps - VIT_WARMUP) * BATCH / (
                time.perf_counter() - self.opened)


def trainer_loop(dataset: Dataset, run_dir: Path) -> tuple[float, float]:
    model = make_model()
    loader, sampler = make_loader(dataset)
    window = _Window()
    trainer = Trainer(model=model, task=ClassificationTask(NUM_CLASSES), train_loader=loader,
                      optimizer=make_optimizer(model), train_sampler=sampler, val_loader=None,
                      run_dir=run_dir, base_lr=LR, device=torch.device("cpu"), epochs=1,
                      logger=RunLogger(run_dir, tensorboard=True, progress=True), hooks=[window],
                      warmup_epochs=0.1, clip_grad=1.0, log_interval=10)
    start = time.perf_counter()
    trainer.fit()  # the whole run: logger start-up and the end-of-epoch checkpoint, fsynced
    return window.steady, trainer.total_steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    if "--floor" in sys.argv:  # the paired per-step floor lives in step_floor.py
        sys.argv.remove("--floor")
        import step_floor
        return step_floor.main()
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per repetition")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice). With 1 on a 2-core "
                        "machine the progress/TensorBoard threads get their own core, so the "
                        "ratio measures the loop rather than contention for the cores")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = InMemoryClips(args.steps * BATCH)
    setup_text_log(None, enabled=False)
    hand_loop(dataset)  # warm-up: first-call allocations and lazy imports
    sides = ["hand", "trainer"] + (["fabric"] if importlib.util.find_spec("lightning") else [])
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            # alternate the order, so drift on a noisy machine hits every side equally
            for side in sides if rep % 2 == 0 else sides[::-1]:
                got[side].append(hand_loop(dataset) if side == "hand" else fabric_loop(dataset)
                                 if side == "fabric" else trainer_loop(dataset, Path(tmp) / f"rep{rep}"))
            print(f"rep {rep}: " + "  ".join(f"{k} {v[-1][0]:.1f} clips/s (whole run {v[-1][1]:.1f})"
                                              for k, v in got.items()), flush=True)
    print(f"{args.steps} steps of {BATCH} clips, {torch.get_num_threads()} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}")
    # the steady state last: the loop's own cost per step, which a long run converges to
    for i, what in ((1, "whole run (start-up, final checkpoint)"), (0, "steady state")):
        for side in sides[1:]:
            ratio = statistics.median(a[i] / b[i] for a, b in zip(got[side], got["hand"]))
            print(f"{what}: {side}/hand throughput ratio (median of {args.reps}): {ratio:.3f}")


if __name__ == "__main__":
    main()
