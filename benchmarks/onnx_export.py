"""ONNX export: time of PyTorch's TorchScript exporter (what `tubelet export` uses) against
the dynamo exporter (torch's default since 2.9), and onnxruntime's parity with PyTorch.

    python benchmarks/onnx_export.py [--reps 3] [--checkpoint RUN_DIR]

Each repetition exports the same model once with each exporter (alternating which goes first),
each in a fresh process, timing `torch.onnx.export` alone: the first export in a process, as
`tubelet export` does it (the exporter's lazy imports included, torch's own import not). The
model is the quickstart's video ViT (40 px, 8 frames, 8 classes), randomly initialised, or the
model of `--checkpoint`. Each exported file then runs under onnxruntime on the same random
clips at batch 1 and 3; the max abs difference against PyTorch is printed. Last line: the
median ratio dynamo / TorchScript export time. Needs `pip install 'tubelet[onnx]' onnxscript`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def worker(dynamo: bool, out: Path, checkpoint: str | None) -> None:
    import time
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    from tubelet.export import Encoder  # noqa: F401 - imports tubelet as `tubelet export` does
    from tubelet.models import create_model
    torch.manual_seed(0)
    if checkpoint:
        from tubelet.trained import load_trained
        model = load_trained(checkpoint).model
    else:
        model = create_model("vit", img_size=40, patch_size=8, num_frames=8, tubelet_size=2,
                             embed_dim=96, depth=4, num_heads=4, global_pool="avg",
                             num_classes=8).eval()
    embed = model.patch_embed
    shape = (3, embed.num_frames, *embed.img_size)
    path = out.with_suffix(".onnx")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=True,
                              input_names=["video"], output_names=["logits"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                              external_data=False, verbose=False)
        else:
            torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=False,
                              opset_version=17, input_names=["video"], output_names=["logits"],
                              dynamic_axes={"video": {0: "batch"}, "logits": {0: "batch"}})
    seconds = time.perf_counter() - start
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    clips = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    diffs = []
    for batch in (clips[:1], clips):
        with torch.no_grad():
            want = model(batch).numpy()
        got = session.run(None, {"video": batch.numpy()})[0]
        diffs.append(float(np.abs(got - want).max()))
    out.write_text(json.dumps({"seconds": seconds, "max_abs_diff": diffs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--checkpoint", default=None, help="a run dir or checkpoint file")
    parser.add_argument("--worker", choices=["torchscript", "dynamo"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker == "dynamo", args.out, args.checkpoint)
        return
    times: dict[str, list[float]] = {"torchscript": [], "dynamo": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["torchscript", "dynamo"] if rep % 2 == 0 else ["dynamo", "torchscript"]
            for name in order:
                out = Path(tmp) / f"{name}_{rep}.json"
                cmd = [sys.executable, __file__, "--worker", name, "--out", str(out)]
                if args.checkpoint:
                    cmd += ["--checkpoint", args.checkpoint]
                subprocess.run(cmd, check=True, capture_output=True)
                result = json.loads(out.read_text())
                times[name].append(result["seconds"])
                print(f"rep {rep} {name:11s} export {result['seconds']:6.2f} s  onnxruntime "
                      f"max abs diff batch 1: {result['max_abs_diff'][0]:.2e}, batch 3: "
                      f"{result['max_abs_diff'][1]:.2e}", flush=True)
    for name, values in times.items():
        print(f"{name}: median export {statistics.median(values):.2f} s over {len(values)}")
    ratio = statistics.median(times["dynamo"]) / statistics.median(times["torchscript"])
    print(f"ratio dynamo / torchscript export time (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
