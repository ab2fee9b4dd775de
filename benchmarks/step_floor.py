"""What tubelet's loop costs per step, paired inside one run: Trainer.fit trains while a hook,
every `--block` steps, times that block and then runs the same number of steps of each
baseline (a raw loop and, when `lightning` is installed, Fabric) on the Trainer's own model
and optimizer objects, each through its own loader over the same dataset. So every side runs
the same kernels over the same memory: only the loop around them differs (separate copies
put each side's tensors elsewhere in memory, which moved the paired medians by +-50 us/step
from run to run). Every block of every side starts after a `gc.collect()`, in the same
process, heap and threads, so the per-block differences are paired; the median over `--blocks`
is printed last.

    python benchmarks/step_floor.py [--model mlp] [--blocks 60] [--block 100] [--threads 1]
        [--nan-guard off] [--no-tensorboard] [--no-progress] [--log-interval N]  (ablations)
    python benchmarks/step_floor.py --model vit [--blocks 15] [--block 10] [--threads 2]

`mlp`: the per-step floor on the issue's 0.1 M-parameter MLP (a ~1 ms step here), in us/step
over the raw loop, with metrics.jsonl, TensorBoard, the progress display and the NaN guard on.
`vit`: the quickstart-sized video ViT (in-memory clips, clipping, the same cosine lr in every
loop), as the throughput ratio to the hand-written loop. tubelet's block includes its log lines
(every 10 steps); the display's redraws (2 per second, from rich's thread) and TensorBoard's
writer thread run beside every side alike, and their own cost is printed separately.
Separate runs (benchmarks/trainer_overhead.py) differ by +-200 us/step from process to process
on this machine, more than the floor itself; pairing in one process is what makes it measurable.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_overhead as bench  # noqa: E402  (the models, data and loaders of both benchmarks)

from torch.utils.data import Dataset  # noqa: E402

from tubelet.data.loader import ResumableSampler, build_loader  # noqa: E402
from tubelet.data.seeding import split_key  # noqa: E402
from tubelet.engine.hooks import Hook  # noqa: E402
from tubelet.engine.schedule import lr_schedule  # noqa: E402
from tubelet.engine.trainer import Trainer  # noqa: E402
from tubelet.loggers import RunLogger, setup_text_log  # noqa: E402
from tubelet.tasks.classification import ClassificationTask  # noqa: E402

Now = tuple[float, float]
# 128 -> 256 -> 256 -> 8, ~0.1M parameters: the size the issue measured its floor at (a
# larger MLP only adds the same model time to every side)
MLP_IN, MLP_HIDDEN, MLP_BATCH = 128, 256, 32
WARMUP_EPOCHS = 0.1


class InMemoryRows(Dataset):
    def __init__(self, num_samples: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(num_samples, MLP_IN, generator=g)
        self.y = torch.randint(0, bench.NUM_CLASSES, (num_samples,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):
        index, _ = split_key(key)
        return {"video": self.x[index], "label": int(self.y[index]), "index": index}


def make_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(MLP_IN, MLP_HIDDEN), torch.nn.GELU(),
                               torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN), torch.nn.GELU(),
                               torch.nn.Linear(MLP_HIDDEN, bench.NUM_CLASSES))


def _now() -> Now:
    return time.perf_counter(), time.thread_time()


def _per_step(start: Now, steps: int) -> Now:
    """(wall, main-thread CPU) seconds per step since `start`."""
    wall, cpu = _now()
    return (wall - start[0]) / steps, (cpu - start[1]) / steps


class Paired(Hook):
    """After every `block` steps: record tubelet's block, then run each baseline
    for `block` steps (their order alternating by block), each after a gc.collect()."""

    def __init__(self, make_baselines: Callable[[Any], dict[str, Callable[[int], None]]],
                 names: list[str], *, block: int) -> None:
        self.make_baselines, self.block = make_baselines, block
        self.baselines: dict[str, Callable[[int], None]] = {}
        self.got: dict[str, list[Now]] = {"tubelet": [], **{k: [] for k in names}}
        self._resumed: Now | None = None
        self.redraw = 0.0

    def after_step(self, trainer) -> None:
        if trainer.step % self.block:
            return  # the first block is the warm-up: first-call allocations, lazy imports
        if self._resumed is not None:
            self.got["tubelet"].append(_per_step(self._resumed, self.block))
        else:  # after the warm-up: the baselines on the Trainer's model and optimizer
            self.baselines = self.make_baselines(trainer)
            for run_block in self.baselines.values():
                run_block(self.block)  # their warm-up: first-call allocations, lazy imports
            # what exists now is never garbage, and a collection between blocks then takes
            gc.freeze()  # ~1 ms instead of ~100 (380k objects)
        order = list(self.baselines.items())
        for name, run in order if len(self.got["tubelet"]) % 2 else order[::-1]:
            gc.collect()
            start = _now()
            run(self.block)
            self.got[name].append(_per_step(start, self.block))
        gc.collect()
        if trainer.step == trainer.total_steps and trainer.logger._progress:
            self.redraw = redraw_cost(trainer.logger)  # while the display is still up
        self._resumed = _now()


def _cycle(loader) -> itertools.chain:
    return itertools.chain.from_iterable(itertools.repeat(loader))


def raw_steps(model, optimizer, loader, *, clip: float | None, lr_at) -> Callable[[int], None]:
    """A hand-written loop that keeps its place across calls: forward, backward, (clip), step."""
    batches, step = _cycle(loader), [0]

    def run(n: int) -> None:
        for batch in itertools.islice(batches, n):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step[0])
            loss = F.cross_entropy(model(batch["video"]), batch["label"])
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step[0] += 1
    return run


def fabric_steps(model, optimizer, loader, *, clip, lr_at) -> Callable[[int], None]:
    """The hand-written loop under Lightning Fabric (no logger, no progress bar)."""
    from lightning.fabric import Fabric
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = fabric.setup(model, optimizer)
    batches, step = _cycle(fabric.setup_dataloaders(loader, use_distributed_sampler=False)), [0]
    model.train()

    def run(n: int) -> None:
        for batch in itertools.islice(batches, n):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step[0])
            loss = F.cross_entropy(model(batch["video"]), batch["label"])
            fabric.backward(loss)
            if clip is not None:
                fabric.clip_gradients(model, optimizer, max_norm=clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step[0] += 1
    return run


def setup(kind: str, steps: int):
    """(make_model, make_optimizer, dataset, batch, clip, lr_at) of the MLP or the video ViT:
    one epoch of `steps` batches. Every loop sets the Trainer's own lr schedule (warmup 10 %,
    cosine), so all sides follow one trajectory: the same numbers through the same kernels."""
    if kind == "mlp":
        make_model, batch, clip = make_mlp, MLP_BATCH, None
        dataset = InMemoryRows(steps * batch)
    else:
        make_model, batch, clip = bench.make_model, bench.BATCH, 1.0
        dataset = bench.InMemoryClips(steps * batch)
    lr_at = lr_schedule(base_lr=bench.LR, total_steps=steps, epochs=1, warmup_epochs=WARMUP_EPOCHS)
    return make_model, bench.make_optimizer, dataset, batch, clip, lr_at


def make_loader(dataset, batch: int):
    sampler = ResumableSampler(len(dataset), batch_size=batch, seed=0)
    return build_loader(dataset, sampler=sampler), sampler


def redraw_cost(logger: RunLogger) -> float:
    """Seconds per redraw of the progress display (rich redraws twice a second)."""
    bar = logger._progress._bar
    start = time.perf_counter()
    for _ in range(20):
        bar.refresh()
    return (time.perf_counter() - start) / 20


def run(args: argparse.Namespace, run_dir: Path) -> Paired:
    steps = (args.blocks + 1) * args.block
    make_model, make_optimizer, dataset, batch, clip, lr_at = setup(args.model, steps)
    names = ["raw"] + (["fabric"] if args.fabric else [])
    kinds = {"raw": raw_steps, "fabric": fabric_steps}

    def make_baselines(trainer) -> dict[str, Callable[[int], None]]:
        return {name: kinds[name](trainer.model, trainer.optimizer, make_loader(dataset, batch)[0],
                                  clip=clip, lr_at=lr_at) for name in names}

    model = make_model()
    loader, sampler = make_loader(dataset, batch)
    paired = Paired(make_baselines, names, block=args.block)
    logger = RunLogger(run_dir, tensorboard=args.tensorboard, progress=args.progress)
    trainer = Trainer(model=model, task=ClassificationTask(bench.NUM_CLASSES), train_loader=loader,
                      optimizer=make_optimizer(model), train_sampler=sampler, val_loader=None,
                      run_dir=run_dir, base_lr=bench.LR, device=torch.device("cpu"),
                      epochs=1, logger=logger, hooks=[paired],
                      warmup_epochs=WARMUP_EPOCHS, clip_grad=clip, log_interval=args.log_interval,
                      nan_guard=args.nan_guard)
    trainer.fit()
    return paired


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "vit"], default="mlp")
    p.add_argument("--blocks", type=int, default=None, help="paired blocks (mlp 60, vit 15)")
    p.add_argument("--block", type=int, default=None, help="steps per block (mlp 100, vit 10)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nan-guard", default="stop", choices=["stop", "off"])
    p.add_argument("--no-fabric", dest="fabric", action="store_false")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="ablation: tubelet without TensorBoard")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="ablation: tubelet without the progress display")
    p.add_argument("--log-interval", type=int, default=10)
    args = p.parse_args()
    args.blocks = args.blocks or (60 if args.model == "mlp" else 15)
    args.block = args.block or (100 if args.model == "mlp" else 10)
    args.fabric = args.fabric and importlib.util.find_spec("lightning") is not None
    torch.set_num_threads(args.threads)
    setup_text_log(None, enabled=False)
    with tempfile.TemporaryDirectory() as tmp:
        paired = run(args, Path(tmp))
    report(paired, args)


def report(paired: Paired, args: argparse.Namespace) -> None:
    got = paired.got
    n = len(got["tubelet"])
    sides = [k for k in got if k not in ("raw", "tubelet")] + ["tubelet"]  # tubelet's last
    for i in range(n):
        print(f"block {i}: " + "  ".join(f"{k} {got[k][i][0] * 1e6:.1f} us/step "
                                         f"(cpu {got[k][i][1] * 1e6:.1f})" for k in got))
    print(f"{args.model}, {args.threads} thread(s), {n} paired blocks of {args.block} steps, "
          f"nan_guard {args.nan_guard}; load average {os.getloadavg()[0]:.2f}")
    redraw = paired.redraw
    print(f"progress redraw: {redraw * 1e6:.0f} us each, twice a second "
          f"({redraw * 2 * 1e6:.0f} us per second of training, beside every side)")
    print(f"raw loop: {statistics.median(x[0] for x in got['raw'][:n]) * 1e6:.1f} us/step (median)")
    for i, what in ((1, "main-thread cpu"), (0, "wall")):
        for side in sides:
            diff = [(a[i] - b[i]) * 1e6 for a, b in zip(got[side], got["raw"])]
            ratio = [b[i] / a[i] for a, b in zip(got[side], got["raw"])]
            print(f"{what}: {side} over the raw loop {statistics.median(diff):+.1f} us/step, "
                  f"throughput ratio {statistics.median(ratio):.3f} (medians of {n} paired blocks)")


if __name__ == "__main__":
    main()
