"""MAE step cost: a training step of the full-token video ViT vs the MAE step at a 0.9 tube mask.

    python benchmarks/mae_masking.py [--preset vit-s|tiny] [--reps 7] [--threads N]

The full-token step is the video ViT classifier on every token (a finetuning step); the MAE
step runs the same encoder on the visible 10% and a VideoMAE-shaped decoder (half the width,
`--decoder-depth` blocks) on all tokens. Both steps are forward + backward + AdamW, timed in
interleaved repetitions (median). The optimizer is built as a run builds it (`build_optimizer`:
parameter groups, the VideoMAE recipe's AdamW settings, PyTorch's default implementation, a
per-tensor loop on a CPU; `--fused` for `fused=True`). The bracket splits each step into forward
(with the loss, and for MAE the pixel targets), backward and optimizer. FLOPs (forward +
backward) come from `torch.utils.flop_counter`, with the CPU attention kernel counted too. The
last line is the speedup in time divided by the speedup in FLOPs: 1.0 means the saved FLOPs are
saved time; the goal is >= 0.85.

Presets: `vit-s` (default) is VideoMAE's ViT-S, 16x224x224 clips, width 384, 12 blocks, batch 2,
decoder width 192, 4 blocks (about 70 s on an idle 2-core CPU); `tiny` is width 192, 6 blocks,
16x112x112, batch 8, decoder 96 x 2, where the MAE step's FLOP-free work (pixel targets, loss,
AdamW) is a larger share than at vit-s. Flags override a preset's values. With more threads than
free cores the times say more about the other jobs than the model: see the last line printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import flop_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tubelet.build import build_optimizer  # noqa: E402
from tubelet.models import MaskedAutoencoder, VisionTransformer  # noqa: E402
from tubelet.tasks.mae_pretrain import MAEPretrainTask  # noqa: E402

PRESETS = {
    "vit-s": dict(img_size=224, frames=16, dim=384, depth=12, batch=2, decoder_depth=4),
    "tiny": dict(img_size=112, frames=16, dim=192, depth=6, batch=8, decoder_depth=2),
}
# configs/videomae/pretrain_vit_base_k400.yaml's optimizer, at a fixed lr
OPTIMIZER = {"type": "adamw", "lr": 1.0e-4, "betas": [0.9, 0.95], "weight_decay": 0.05}
PHASES = ("forward", "backward", "optimizer")


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


def make_step(model: torch.nn.Module, loss_fn, times: dict[str, list[float]], *, fused: bool = False):
    """One training step as the trainer runs it; appends each phase's seconds to `times`."""
    node = {**OPTIMIZER, "fused": True} if fused else OPTIMIZER
    optimizer, _ = build_optimizer(node, model, total_batch_size=1)

    def step() -> None:
        start = time.perf_counter()
        loss = loss_fn(model)
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        for phase, seconds in zip(PHASES, (forward - start, backward - forward, end - backward)):
            times[phase].append(seconds)

    return step


def _attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# The counter knows the CUDA attention kernels but not the CPU one, so on a CPU it would leave out
# attention, quadratic in the tokens: 40% of the full step's FLOPs at vit-s. Same formulas here.
ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward_flops,
}


def flops(model: torch.nn.Module, loss_fn) -> tuple[int, int]:
    """Forward + backward FLOPs of one step: (all, attention's)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as counter:
        loss_fn(model).backward()
    model.zero_grad(set_to_none=True)
    counts = counter.get_flop_counts()["Global"]
    attention = sum(n for op, n in counts.items() if "attention" in str(op))
    return counter.get_total_flops(), attention


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="vit-s")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--fused", action="store_true",
                   help="AdamW(fused=True) for both steps, as `optimizer.fused: true` in a recipe")
    for name in ("batch", "frames", "img-size", "dim", "depth", "decoder-depth"):
        p.add_argument(f"--{name}", type=int, default=None, help="default: the preset's")
    p.add_argument("--mask-ratio", type=float, default=0.9)
    args = p.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    full, mae = build(args)
    video = torch.randn(args.batch, 3, args.frames, args.img_size, args.img_size)
    labels = torch.randint(0, 400, (args.batch,))
    # the VideoMAE recipe's target: per channel, std + eps, on unnormalised pixels
    task = MAEPretrainTask(norm_pix_loss="videomae", pixel_mean=[0.485, 0.456, 0.406],
                           pixel_std=[0.229, 0.224, 0.225])
    loss_fns = {"full": lambda m: F.cross_entropy(m(video), labels),
                "mae": lambda m: task.loss(m, {"video": video})}
    models = {"full": full, "mae": mae}
    total = {name: flops(models[name], loss_fns[name]) for name in models}
    times = {name: {phase: [] for phase in PHASES} for name in models}
    steps = {name: make_step(models[name], loss_fns[name], times[name], fused=args.fused)
             for name in models}
    for step in steps.values():  # warm-up: allocator, first-call overheads, AdamW's state
        step()
    for phase_times in times.values():
        for seconds in phase_times.values():
            seconds.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.reps):  # interleaved, so load changes on a shared machine hit both
        for step in steps.values():
            step()
    cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
    report(args, full, mae, total, times, cores=cores)


def report(args: argparse.Namespace, full: torch.nn.Module, mae: torch.nn.Module,
           total: dict[str, tuple[int, int]], times: dict[str, dict[str, list[float]]], *,
           cores: float) -> None:
    step_ms = {name: statistics.median(map(sum, zip(*t.values()))) * 1e3 for name, t in times.items()}
    visible = int((~mae.draw_mask(1, "cpu")).sum())
    print(f"video ViT: {args.frames}x{args.img_size}^2, patch 16, tubelet 2, dim {args.dim}, depth "
          f"{args.depth}; MAE decoder dim {args.dim // 2}, depth {args.decoder_depth}; batch "
          f"{args.batch}; {torch.get_num_threads()} threads; AdamW {'fused' if args.fused else 'default'}; "
          f"median of {args.reps}")
    print(f"tokens: {full.patch_embed.num_patches} full, {visible} visible at a {args.mask_ratio} "
          f"tube mask; parameters: {sum(p.numel() for p in full.parameters()) / 1e6:.1f}M full, "
          f"{sum(p.numel() for p in mae.parameters()) / 1e6:.1f}M MAE")
    for name, label in (("full", "full-token step:"), ("mae", "MAE step:")):
        phases = "  ".join(f"{p[:3]} {statistics.median(times[name][p]) * 1e3:6.1f}" for p in PHASES)
        gflop, attention = (n / 1e9 for n in total[name])
        print(f"{label:16s} {step_ms[name]:8.1f} ms   {gflop:7.2f} GFLOP (fwd+bwd; attention "
              f"{attention:.2f})   [{phases} ms]")
    speedup, flop_ratio = step_ms["full"] / step_ms["mae"], total["full"][0] / total["mae"][0]
    print(f"time speedup {speedup:.2f}x   FLOP ratio {flop_ratio:.2f}x")
    print(f"time speedup / FLOP ratio: {speedup / flop_ratio:.2f}")
    threads = torch.get_num_threads()
    print(f"while timed: {cores:.2f} cores busy for {threads} threads; load average "
          f"{os.getloadavg()[0]:.2f}")
    if cores < 0.9 * threads:
        # a parallel op waits for its slowest thread, so a thread that loses its core to another
        # job stalls every op: the small ops of the MAE step suffer most
        print("warning: other jobs took cores from this one; the times are not the model's. "
              "Re-run on an idle machine or with fewer --threads.")


if __name__ == "__main__":
    main()
