"""Checkpoint save time on a ViT-L + AdamW state (~3.6 GB): tubelet's synchronous save (temp
file, sha256 sidecar, fsync, atomic rename, retention) against `torch.save` + fsync of the
same state, and the asynchronous save (`train.async_checkpoint`): how long the loop is
blocked (the copy) and how long until the background write is committed. Interleaved reps,
medians; the ratios last.

    python benchmarks/checkpoint_save.py [--reps 3] [--model vit_large_patch16_224] [--dir D]

Needs ~3x the state in free memory once (live state, the async copy, page cache) and the
state's size in free disk under --dir (each file is deleted after its rep).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tubelet.engine.async_save import AsyncSaver
from tubelet.engine.checkpoint import save_checkpoint
from tubelet.engine.optim import AdamW, param_groups
from tubelet.models import create_model


def make_state(name: str) -> dict:
    """A model and a stepped AdamW (exp_avg, exp_avg_sq allocated): what a checkpoint holds."""
    model = create_model(name, num_classes=400)
    optimizer = AdamW(param_groups(model, weight_decay=0.05), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "trainer": {"step": 1}}


def torch_save(state: dict, folder: Path) -> float:
    start = time.perf_counter()
    with open(folder / "plain.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - start


def tubelet_save(state: dict, folder: Path) -> float:
    start = time.perf_counter()
    save_checkpoint(state, folder / "checkpoints", step=1, keep_last=1)
    return time.perf_counter() - start


def async_save(state: dict, folder: Path, saver: AsyncSaver) -> tuple[float, float]:
    """(seconds the loop is blocked, seconds until the write is committed). One saver for
    all reps, as in a run: its staging buffers are allocated at the first save (rep 0)."""
    start = time.perf_counter()
    saver.save(state, folder / "checkpoints", step=1, keep_last=1)
    blocked = time.perf_counter() - start
    saver.wait()
    return blocked, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--model", default="vit_large_patch16_224")
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the async copy (torch.save and sha256 use "
                        "one thread anyway). 1 by default: on a loaded machine every parallel "
                        "copy_ of the ~900 tensors waits for a free core at its barrier")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    state = make_state(args.model)
    size = sum(t.numel() * t.element_size() for part in (state["model"],)
               for t in part.values())
    size += sum(t.numel() * t.element_size() for s in state["optimizer"]["state"].values()
                for t in s.values() if torch.is_tensor(t))
    print(f"{args.model} + AdamW state: {size / 2**30:.2f} GiB")
    sides = ["torch.save+fsync", "tubelet sync", "tubelet async"]
    got: dict[str, list] = {k: [] for k in sides}
    saver = AsyncSaver()
    for rep in range(args.reps):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            # the previous side's deleted file and dirty pages are written back first, so
            # no side's fsync pays for another's writeback (it varied 3x across reps without)
            os.sync()
            folder = Path(tempfile.mkdtemp(dir=args.dir))
            try:
                got[side].append(torch_save(state, folder) if side == sides[0] else
                                 tubelet_save(state, folder) if side == sides[1] else
                                 async_save(state, folder, saver))
            finally:
                shutil.rmtree(folder)
        print(f"rep {rep}: torch.save+fsync {got[sides[0]][-1]:.2f} s, tubelet sync "
              f"{got[sides[1]][-1]:.2f} s, async blocked {got[sides[2]][-1][0]:.2f} s / "
              f"committed {got[sides[2]][-1][1]:.2f} s", flush=True)
    plain, sync = statistics.median(got[sides[0]]), statistics.median(got[sides[1]])
    blocked = statistics.median(b for b, _ in got[sides[2]])
    committed = statistics.median(c for _, c in got[sides[2]])
    print(f"medians of {args.reps}: torch.save+fsync {plain:.2f} s, tubelet sync {sync:.2f} s, "
          f"async: loop blocked {blocked:.2f} s, committed after {committed:.2f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"async: loop blocked / sync save time: {blocked / sync:.3f}")
    print(f"tubelet sync save speed vs torch.save+fsync (median of {args.reps}): "
          f"{statistics.median(a / b for a, b in zip(got[sides[0]], got[sides[1]])):.3f}")


if __name__ == "__main__":
    main()
