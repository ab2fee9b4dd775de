"""MAE step cost: a training step of the full-token video ViT vs the MAE step at a 0.9 tube mask.

    python benchmarks/mae_masking.py [--reps 7] [--batch 8]

The full-token step is the video ViT classifier on every token (a finetuning step); the MAE
step runs the same encoder on the visible 10% and a VideoMAE-shaped decoder (half the width,
`--decoder-depth` blocks) on all tokens. Both steps are forward + backward + AdamW, timed in
interleaved repetitions (median). FLOPs (forward + backward) come from
`torch.utils.flop_counter`. The last line is the speedup in time divided by the speedup in FLOPs:
1.0 means the saved FLOPs are saved time; the goal is >= 0.85.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tubelet.models import MaskedAutoencoder, VisionTransformer  # noqa: E402
from tubelet.tasks.mae_pretrain import MAEPretrainTask  # noqa: E402


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    common = dict(img_size=args.img_size, patch_size=16, num_frames=args.frames, tubelet_size=2,
                  embed_dim=args.dim, depth=args.depth, num_heads=args.dim // 64, qkv_bias="qv",
                  pos_embed="sincos", class_token=False)
    torch.manual_seed(0)
    full = VisionTransformer(**common, global_pool="avg", num_classes=400)
    mae = MaskedAutoencoder(**common, decoder_embed_dim=args.dim // 2, decoder_depth=args.decoder_depth,
                            decoder_num_heads=max(1, args.dim // 128), mask_type="tube",
                            mask_ratio=args.mask_ratio)
    return full, mae


def make_steps(full, mae, video, labels):
    task = MAEPretrainTask(norm_pix_loss=True)
    opt_full = torch.optim.AdamW(full.parameters(), lr=1e-4)
    opt_mae = torch.optim.AdamW(mae.parameters(), lr=1e-4)

    def full_step():
        loss = F.cross_entropy(full(video), labels)
        loss.backward()
        opt_full.step()
        opt_full.zero_grad(set_to_none=True)

    def mae_step():
        loss = task.loss(mae, {"video": video})
        loss.backward()
        opt_mae.step()
        opt_mae.zero_grad(set_to_none=True)

    return full_step, mae_step


def flops(model: torch.nn.Module, fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(model)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--decoder-depth", type=int, default=2)
    p.add_argument("--mask-ratio", type=float, default=0.9)
    args = p.parse_args()

    full, mae = build(args)
    video = torch.randn(args.batch, 3, args.frames, args.img_size, args.img_size)
    labels = torch.randint(0, 400, (args.batch,))
    task = MAEPretrainTask(norm_pix_loss=True)
    flops_full = flops(full, lambda m: F.cross_entropy(m(video), labels).backward())
    flops_mae = flops(mae, lambda m: task.loss(m, {"video": video}).backward())
    full_step, mae_step = make_steps(full, mae, video, labels)
    for step in (full_step, mae_step):  # warm-up: allocator, first-call overheads
        step()
    times = {"full": [], "mae": []}
    for _ in range(args.reps):  # interleaved, so load changes on a shared machine hit both
        for name, step in (("full", full_step), ("mae", mae_step)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    t_full, t_mae = statistics.median(times["full"]), statistics.median(times["mae"])
    tokens = full.patch_embed.num_patches
    visible = int((~mae.draw_mask(1, "cpu")).sum())
    print(f"video ViT: {args.frames}x{args.img_size}^2, patch 16, tubelet 2, dim {args.dim}, depth "
          f"{args.depth}; MAE decoder dim {args.dim // 2}, depth {args.decoder_depth}; batch "
          f"{args.batch}; {torch.get_num_threads()} threads; median of {args.reps}")
    print(f"tokens: {tokens} full, {visible} visible at a {args.mask_ratio} tube mask")
    print(f"full-token step: {t_full * 1e3:8.1f} ms   {flops_full / 1e9:7.2f} GFLOP (fwd+bwd)")
    print(f"MAE step:        {t_mae * 1e3:8.1f} ms   {flops_mae / 1e9:7.2f} GFLOP (fwd+bwd)")
    speedup, flop_ratio = t_full / t_mae, flops_full / flops_mae
    print(f"time speedup {speedup:.2f}x   FLOP ratio {flop_ratio:.2f}x")
    print(f"time speedup / FLOP ratio: {speedup / flop_ratio:.2f}")


if __name__ == "__main__":
    main()
