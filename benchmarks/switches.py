"""The run switches of issue 15, each against the plain run in the same invocation, on CPU.

    python benchmarks/switches.py checkpointing [--reps 3] [--batch 1] [--threads 2]
    python benchmarks/switches.py compile [--model quickstart|vit_s] [--reps 5]
    python benchmarks/switches.py channels_last [--reps 5]
    python benchmarks/switches.py num_sample [--reps 3] [--steps 10]

Every arm runs in a fresh subprocess (one per arm and repetition, alternating which goes
first), so peak RSS (`ru_maxrss` of the child) is that arm's alone and no arm warms another's
caches. Step times (wall, and `cpu_s`, the process's CPU seconds, which a busy machine
stretches less) are medians over the timed steps after `--warmup` untimed ones (compile:
the first step, which compiles, is reported apart as the compile time). Prints each
repetition, then the median ratio (switch / plain) last.

- checkpointing: VideoMAE ViT-S/16 finetune model (16 x 224^2 clips, 1568 tokens), forward +
  backward + AdamW, `model.set_grad_checkpointing()` on or off.
- compile: the quickstart model (or timm's ViT-S/16 at 224^2, 197 tokens) with
  `nn.Module.compile()` (inductor) against eager.
- channels_last: ResNet3D-18 on 8 x 112^2 clips, channels-last-3d weights and input.
- num_sample: the quickstart recipe's model and data (real MP4 decoding in the loop, 0 loader
  workers): batch 16 x num_sample 1 against batch 8 x num_sample 2, i.e. 16 clips per step
  each; reports trained clips per second and decodes per trained clip.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(kind: str, arm: str, args: argparse.Namespace) -> dict:
    """Run one arm in a fresh process; its JSON result plus its peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--child", kind, arm, json.dumps(vars(args))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind}/{arm} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(kind: str, arm: str, opts: dict) -> dict:
    import torch
    torch.set_num_threads(opts["threads"])
    torch.manual_seed(0)
    return {"checkpointing": step_checkpointing, "compile": step_compile,
            "channels_last": step_channels_last, "num_sample": step_num_sample}[kind](arm, opts)


CPU_TIMES: list[float] = []  # process CPU seconds of each timed step: less load-bound than wall


def timed_steps(step, *, warmup: int, steps: int) -> tuple[list[float], float]:
    first = time.perf_counter()
    step()
    first = time.perf_counter() - first
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        CPU_TIMES.append(time.process_time() - c)
    return times, first


def train_step(model, x, opt):
    import torch

    def step() -> None:
        loss = model(x).float().square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def step_checkpointing(arm: str, opts: dict) -> dict:
    import torch
    from tubelet.models.vit import VisionTransformer
    model = VisionTransformer(patch_size=16, embed_dim=384, depth=12, num_heads=6,
                              num_frames=16, tubelet_size=2, global_pool="avg",
                              class_token=False, pos_embed="sincos", qkv_bias="qv",
                              drop_path_rate=0.1, num_classes=400)
    model.set_grad_checkpointing(arm == "on")
    x = torch.randn(opts["batch"], 3, 16, 224, 224)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, _ = timed_steps(train_step(model, x, opt), warmup=opts["warmup"], steps=opts["steps"])
    return {"step_s": statistics.median(times)}


def step_compile(arm: str, opts: dict) -> dict:
    import torch
    from tubelet.models.vit import VisionTransformer
    if opts["model"] == "vit_s":
        model = VisionTransformer(patch_size=16, embed_dim=384, depth=12, num_heads=6,
                                  num_classes=1000)
        x = torch.randn(opts["batch"], 3, 224, 224)
    else:  # configs/quickstart.yaml's model and clip
        model = VisionTransformer(img_size=40, patch_size=8, num_frames=8, tubelet_size=2,
                                  embed_dim=96, depth=4, num_heads=4, global_pool="avg",
                                  num_classes=8)
        x = torch.randn(16, 3, 8, 40, 40)
    if arm == "on":
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, first = timed_steps(train_step(model, x, opt), warmup=opts["warmup"],
                               steps=opts["steps"])
    return {"step_s": statistics.median(times), "first_step_s": first}


def step_channels_last(arm: str, opts: dict) -> dict:
    import torch
    from tubelet.engine.switches import use_channels_last
    from tubelet.models.resnet3d import ResNet3D
    model = ResNet3D(block="basic", layers=(2, 2, 2, 2), num_classes=51)
    if arm == "on":
        use_channels_last(model)
    x = torch.randn(opts["batch"], 3, 8, 112, 112)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times, _ = timed_steps(train_step(model, x, opt), warmup=opts["warmup"], steps=opts["steps"])
    return {"step_s": statistics.median(times)}


def step_num_sample(arm: str, opts: dict) -> dict:
    """The quickstart's model and data; decode counted by wrapping the dataset's load."""
    import torch
    from tubelet.build import build_loaders, build_model, DataOptions
    from tubelet.config import load_config
    k = int(arm)
    cfg = load_config(REPO / "configs" / "quickstart.yaml",
                      [f"data.batch_size={16 // k}", f"data.train.num_sample={k}",
                       "data.num_workers=0", f"data.train.root={opts['root']}",
                       "data.train.generate=true", "data.val=null"])
    loader, sampler, _ = build_loaders(DataOptions(**cfg["data"]), seed=0,
                                       device=torch.device("cpu"))
    dataset = loader.dataset
    decodes = [0]
    load = dataset.load

    def counting(*a, **kw):
        decodes[0] += 1
        return load(*a, **kw)
    dataset.load = counting
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = iter(loader)
    clips = [0]

    def step() -> None:
        batch = next(batches)
        clips[0] += batch["video"].shape[0]
        loss = torch.nn.functional.cross_entropy(model(batch["video"]), batch["label"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    times, _ = timed_steps(step, warmup=opts["warmup"], steps=opts["steps"])
    per_step = clips[0] / (opts["warmup"] + opts["steps"])
    return {"step_s": statistics.median(times), "clips_per_s": per_step / statistics.median(times),
            "decodes_per_clip": decodes[0] / clips[0]}


ARMS = {"checkpointing": ("off", "on"), "compile": ("off", "on"),
        "channels_last": ("off", "on"), "num_sample": ("1", "2")}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        result = run_child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["cpu_s"] = statistics.median(CPU_TIMES)
        print(json.dumps(result))
        return
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=list(ARMS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="quickstart", choices=("quickstart", "vit_s"))
    p.add_argument("--root", default="/tmp/tubelet_bench/synth_actions",
                   help="num_sample: where the quickstart's synthetic set is (written if missing)")
    args = p.parse_args()
    base, switch = ARMS[args.kind]
    ratios, results = [], {base: [], switch: []}
    for rep in range(args.reps):
        order = (base, switch) if rep % 2 == 0 else (switch, base)
        got = {arm: child(args.kind, arm, args) for arm in order}
        for arm in order:
            results[arm].append(got[arm])
            print(f"rep {rep} {args.kind}={arm}: " + " ".join(
                f"{k}={v:.4g}" for k, v in got[arm].items()), flush=True)
        key = "clips_per_s" if args.kind == "num_sample" else "step_s"
        ratios.append(got[switch][key] / got[base][key])
    for arm in (base, switch):
        summary = {k: statistics.median(r[k] for r in results[arm]) for k in results[arm][0]}
        print(f"median {args.kind}={arm}: " + " ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    what = "clips/s" if args.kind == "num_sample" else "step time"
    print(f"{args.kind}: {what} ratio {switch}/{base} = {statistics.median(ratios):.3f} "
          f"(median of {args.reps})")


if __name__ == "__main__":
    main()
