"""Trainer overhead: the same tiny video ViT and data through a hand-written loop and through
`Trainer.fit` (metrics.jsonl, TensorBoard and the rich progress bar on), interleaved.

    python benchmarks/trainer_overhead.py [--reps 7] [--steps 60] [--threads 1]

Prints per-repetition throughputs, and last the median ratio Trainer / hand-written loop.
"""
from __future__ import annotations

import argparse
import statistics
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
    return torch.optim.AdamW(param_groups(model, weight_decay=0.05), lr=LR)


def make_loader(dataset: Dataset):
    sampler = ResumableSampler(len(dataset), batch_size=BATCH, seed=0)
    return build_loader(dataset, sampler=sampler), sampler


def hand_loop(dataset: Dataset) -> float:
    """What a user writes by hand: the same lr schedule, clipping and AdamW; no logging."""
    model, loader = make_model(), make_loader(dataset)[0]
    optimizer = make_optimizer(model)
    total = len(loader)
    start = time.perf_counter()
    model.train()
    for step, batch in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, base_lr=LR, total_steps=total, warmup_steps=total // 10)
        loss = F.cross_entropy(model(batch["video"]), batch["label"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return total * BATCH / (time.perf_counter() - start)


def trainer_loop(dataset: Dataset, run_dir: Path) -> float:
    model = make_model()
    loader, sampler = make_loader(dataset)
    trainer = Trainer(model=model, task=ClassificationTask(NUM_CLASSES), train_loader=loader,
                      optimizer=make_optimizer(model), train_sampler=sampler, val_loader=None,
                      run_dir=run_dir, base_lr=LR, device=torch.device("cpu"), epochs=1,
                      logger=RunLogger(run_dir, tensorboard=True, progress=True),
                      warmup_epochs=0.1, clip_grad=1.0, log_interval=10)
    start = time.perf_counter()
    trainer.fit()  # includes the end-of-epoch checkpoint, as a real run pays it
    return trainer.total_steps * BATCH / (time.perf_counter() - start)


def main() -> None:
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
    ratios, hand, ours = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            # alternate which side goes first, so drift on a noisy machine hits both equally
            order = ("hand", "trainer") if rep % 2 == 0 else ("trainer", "hand")
            got = {}
            for side in order:
                got[side] = (hand_loop(dataset) if side == "hand"
                             else trainer_loop(dataset, Path(tmp) / f"rep{rep}"))
            hand.append(got["hand"])
            ours.append(got["trainer"])
            ratios.append(got["trainer"] / got["hand"])
            print(f"rep {rep}: hand {got['hand']:.1f} clips/s  trainer {got['trainer']:.1f} "
                  f"clips/s  ratio {ratios[-1]:.3f}", flush=True)
    print(f"median throughput: hand {statistics.median(hand):.1f} clips/s, "
          f"trainer {statistics.median(ours):.1f} clips/s")
    print(f"trainer/hand throughput ratio (median of {args.reps}): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
