"""`tubelet visualize RUN_DIR [VIDEO...] [--out DIR]`: what an MAE/VideoMAE pretraining run has
learnt, as one PNG per clip: the original frames, the masked input and the reconstruction
(tasks/mae_vis.py takes the normalised-pixel predictions back to pixels as VideoMAE does).

The clips are the given videos, read with the recipe's clip settings and transforms (those of
`data.val`, else `data.train`), or the first clips of that split. Masks are drawn from a fixed
seed, so two calls show the same masks.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
CLIP_KEYS = ("num_frames", "stride", "sampling", "target_fps", "backend")  # video_list's too


def _split(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    data = cfg.get("data") or {}
    key = "val" if data.get("val") else "train"
    return f"data.{key}", dict(data[key])


def _display_stats(node: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """The mean/std of the split's `normalize` transform: what takes the model input back to
    pixels for display (None: the input is pixels already)."""
    for t in node.get("transforms") or []:
        if t.get("type") == "normalize":
            return list(t["mean"]), list(t["std"])
    return None


def _clips(node: dict[str, Any], videos: list[Path], *, key: str, num_clips: int,
           tmp: Path) -> tuple[Any, list[str]]:
    """(dataset, a name per clip): the given videos as an unlabelled video list with the
    clip settings of split `node` (recipe key `key`), or the split itself."""
    from tubelet import build
    if videos:
        for v in videos:
            if not v.is_file():
                raise ConfigError(f"VIDEO: {str(v)!r} not found")
        listing = tmp / "videos.txt"
        listing.write_text("".join(f"{v.resolve()}\n" for v in videos))
        node = {"type": "video_list", "annotations": str(listing), "subset": "test",
                **{k: node[k] for k in CLIP_KEYS if k in node},
                **{k: node[k] for k in build.DATA_TRANSFORM_KEYS if k in node}}
        names = [v.stem for v in videos]
    dataset, device_tf = build.build_dataset(node, key=key)
    if not videos:
        names = [f"{key.split('.')[1]}_{i:03d}" for i in range(min(num_clips, len(dataset)))]
    return (dataset, device_tf), names


def visualize(run_dir: Path, videos: list[Path], *, out: Path | None = None,
              num_clips: int = 4, seed: int = 0) -> list[Path]:
    """Write one PNG per clip; returns their paths."""
    from tubelet import build
    from tubelet.config import load_config
    from tubelet.engine.checkpoint import load_checkpoint
    from tubelet.models.weights import resolve_checkpoint
    from tubelet.tasks.mae_pretrain import MAEPretrainTask, unwrap
    from tubelet.tasks.mae_vis import reconstruct
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} has no config.yaml; expected a run directory")
    cfg = load_config(run_dir / "config.yaml")
    build.validate_config(cfg, check_paths=not videos)
    task = build.build_at(cfg["task"], build.TASKS, key="task")
    if not isinstance(task, MAEPretrainTask):
        raise ConfigError(f"task.type: {cfg['task']['type']!r}; visualize shows the "
                          "reconstructions of an MAE/VideoMAE pretraining run (mae_pretrain)")
    model = build.build_model(cfg, load_pretrained=False)
    model.load_state_dict(load_checkpoint(resolve_checkpoint(run_dir, key="RUN_DIR"),
                                          key="RUN_DIR")["model"])
    model.eval()
    out = out or run_dir / "visualize"
    out.mkdir(parents=True, exist_ok=True)
    key, node = _split(cfg)
    display = None if task.pixel_std is not None else _display_stats(node)
    written = []
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        (dataset, device_tf), names = _clips(node, videos, key=key, num_clips=num_clips,
                                             tmp=Path(tmp))
        for i, name in enumerate(names):
            video = dataset[i]["video"]
            if device_tf is not None:  # uint8 clips transformed after transfer
                video = device_tf(video)
            video = video.unsqueeze(0)
            torch.manual_seed(seed + i)  # the same masks every call
            with torch.no_grad():
                result = model(video)
            inner = unwrap(model)
            rows = reconstruct(video, result["pred"], result["mask"], patch_size=inner.patch_size,
                               tubelet_size=inner.tubelet_size, norm_pix=task.target_norm(inner),
                               pixel_mean=task.pixel_mean, pixel_std=task.pixel_std)
            path = out / f"{i:03d}_{name}.png"
            save_png(path, [r[0] for r in rows], display=display,
                     title=f"{run_dir.name}: {name}, {int(result['mask'].sum())} of "
                           f"{result['mask'].shape[1]} tokens hidden")
            written.append(path)
    return written


def save_png(path: Path, rows: list[torch.Tensor], *, display: tuple[list, list] | None,
             title: str) -> None:
    """Three rows (original, masked input, reconstruction), a column per frame, labelled."""
    from tubelet.report import new_figure
    from tubelet.tasks.mae_vis import ROWS, to_pixels
    mean, std = display if display else (None, None)
    frames = [to_pixels(r, mean=mean, std=std) for r in rows]
    T = frames[0].shape[0]
    fig = new_figure(figsize=(1.3 * T + 1.2, 4.4), layout="constrained")
    axes = fig.subplots(len(frames), T, squeeze=False)
    for r, (label, clip) in enumerate(zip(ROWS, frames)):
        for t in range(T):
            ax = axes[r][t]
            ax.imshow(clip[t], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize="small")
            if t == 0:
                ax.set_ylabel(label, fontsize="small")
    fig.suptitle(title, fontsize="small")
    fig.savefig(path, dpi=100)
