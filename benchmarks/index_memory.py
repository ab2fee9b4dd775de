"""Startup and memory at Kinetics scale: the metadata index and the per-video tables.

    python benchmarks/index_memory.py [--files 5000] [--videos 50000] [--workers 4] [--reps 3]

Every video is a hard link of one small H.264 MP4 (probing costs what a real short clip costs;
the disk holds one file). Three measurements, each against a baseline in the same run:

1. Index cost per 1,000 files, cold (no index: stat + probe + write) and warm (stat + read):
   ours (npz of flat arrays, `tubelet.data.metadata`) vs the former JSON index (version 1,
   re-implemented below as it was), reps interleaved, medians. Plus the index's bytes per file.
2. Metadata bytes per video in the main process: our tables' `nbytes`, and what building them
   allocates (tracemalloc), vs the former per-video Python objects (a `Sample` NamedTuple of
   Path, label and "file:line" string plus a `VideoInfo` dataclass per video).
3. RSS and private memory (USS) of the main process and of each of `--workers` DataLoader
   workers before and after one epoch over `--videos` videos, for both storages. The items
   read each video's metadata (path, label, info, clip indices) but decode nothing, so the
   only thing that can grow in a worker is what touching the metadata copies (copy-on-write).
"""
from __future__ import annotations

import argparse
import gc
import warnings
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tubelet.data import metadata  # noqa: E402
from tubelet.data.datasets.video_list import VideoList  # noqa: E402
from tubelet.data.decode import VideoInfo, probe  # noqa: E402
from tubelet.data.sampling import clip_indices  # noqa: E402
from tubelet.data.synth import render_video, write_mp4  # noqa: E402
from tubelet.data.tables import Sample  # noqa: E402


def make_links(root: Path, n: int) -> Path:
    """root/videos/<class>/clip<k>.mp4 (hard links of one 16-frame MP4) and a video_list."""
    source = root / "source.mp4"
    if not source.exists():
        frames = render_video(np.random.default_rng(0), velocity=(0, 2), num_frames=16, size=64)
        write_mp4(source, frames, fps=8)
    lines = []
    for k in range(n):
        rel = f"videos/class_{k % 400:03d}/yt{k:011d}_000010_000020.mp4"  # Kinetics-like names
        path = root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, path)
        lines.append(f"{rel} {k % 400}\n")
    listing = root / f"list_{n}.txt"
    listing.write_text("".join(lines))
    return listing


# --------------------------------------------------------------------- the former JSON index
def legacy_video_infos(paths: list[Path], *, index_file: Path) -> list[VideoInfo | str]:
    """tubelet's metadata index before INDEX_VERSION 3: a JSON dict path -> list."""
    try:
        data = json.loads(index_file.read_text())
        cached = data.get("files", {}) if data.get("version") == 1 else {}
    except (OSError, ValueError):
        cached = {}
    stats = metadata.parallel_map(lambda p: (p.stat().st_size, p.stat().st_mtime_ns), paths)
    results: list = [None] * len(paths)
    todo = []
    for i, (path, st) in enumerate(zip(paths, stats)):
        entry = cached.get(str(path))
        if entry is not None and entry[:2] == list(st):
            results[i] = VideoInfo(num_frames=entry[2], fps=entry[3], height=entry[4],
                                   width=entry[5])
        else:
            todo.append(i)
    for i, info in zip(todo, metadata.parallel_map(probe, [paths[i] for i in todo])):
        results[i] = info
    files = dict(cached)
    for p, st, r in zip(paths, stats, results):
        files[str(p)] = [*st, r.num_frames, r.fps, r.height, r.width]
    if files != cached:
        index_file.write_text(json.dumps({"version": 1, "files": files}))
    return results


def time_index(listing: Path, n: int, reps: int) -> dict[str, float]:
    root = listing.parent
    paths = [root / line.rsplit(maxsplit=1)[0] for line in listing.read_text().splitlines()]
    runs = {"ours": lambda f: metadata.video_infos(paths, index_file=f),
            "json": lambda f: legacy_video_infos(paths, index_file=f)}
    times: dict[str, list[float]] = {f"{k}_{c}": [] for k in runs for c in ("cold", "warm")}
    sizes = {}
    for _ in range(reps):
        for name, fn in runs.items():  # interleaved: the page cache and load hit both alike
            index_file = root / f"index_{name}.{'npz' if name == 'ours' else 'json'}"
            index_file.unlink(missing_ok=True)
            for case in ("cold", "warm"):
                start = time.perf_counter()
                fn(index_file)
                times[f"{name}_{case}"].append(time.perf_counter() - start)
            sizes[name] = index_file.stat().st_size / n
    out = {k: 1000 * statistics.median(v) / n * 1000 for k, v in times.items()}  # ms / 1k files
    out.update({f"{k}_bytes_per_file": v for k, v in sizes.items()})
    return out


# --------------------------------------------------------------------- memory
class MetadataOnly(VideoList):
    """Reads everything a real item reads about its video, decodes nothing."""

    def load(self, i, generator, view, num_views, num_frames=None):
        info, sample = self.infos[i], self.samples[i]
        idx = clip_indices(info.num_frames, fps=info.fps, sampling=self.sampling,
                           num_frames=num_frames or self.num_frames, stride=self.stride,
                           target_fps=None, generator=generator, view=view, num_views=num_views)
        assert sample.path.name and idx
        return torch.zeros(3, 1, 1, 1, dtype=torch.uint8)


class LegacySamples(list):
    def target(self, i: int):
        return self[i].target


def to_legacy(data: MetadataOnly) -> None:
    """Swap the tables for the former per-video Python objects (lists of Sample, VideoInfo)."""
    data.samples = LegacySamples(Sample(s.path, s.target, s.where) for s in data.samples)
    data.infos = [info for info in data.infos]


def memory(pid: int) -> tuple[float, float]:
    """(RSS, USS = private clean + dirty) in MB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0]) / 1024
    return fields["Rss"], fields["Private_Clean"] + fields["Private_Dirty"]


def epoch_memory(listing: Path, *, legacy: bool, workers: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    data = MetadataOnly(str(listing), subset="train", num_frames=8, stride=1,
                        index_file=str(listing.parent / "index_ours.npz"))
    if legacy:
        to_legacy(data)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    n = len(data.samples)
    out = {"python_bytes_per_video": held / n}
    if not legacy:
        out["table_bytes_per_video"] = (data.samples.nbytes + data.infos.nbytes) / n
    loader = DataLoader(data, batch_size=256, num_workers=workers, persistent_workers=True,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]
    start = [memory(p) for p in pids]
    out["main_rss_mb"] = memory(os.getpid())[0]
    for _ in it:
        pass
    end = [memory(p) for p in pids]
    out["worker_rss_start_mb"] = statistics.mean(r for r, _ in start)
    out["worker_rss_end_mb"] = statistics.mean(r for r, _ in end)
    out["worker_uss_growth_mb"] = statistics.mean(e[1] - s[1] for s, e in zip(start, end))
    del it, loader
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=5000, help="files for the index timing")
    p.add_argument("--videos", type=int, default=50000, help="videos for the memory epoch")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None)
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*worker processes in total")  # a small box
    root = args.dir or Path(tempfile.mkdtemp(prefix="tubelet_index_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    small, large = make_links(root, args.files), make_links(root, args.videos)
    t = time_index(small, args.files, args.reps)
    print(f"index, {args.files} files, ms per 1,000 files (median of {args.reps}):")
    for case in ("cold", "warm"):
        print(f"  {case:4s}  ours {t[f'ours_{case}']:8.1f}   json {t[f'json_{case}']:8.1f}")
    print(f"  bytes per file: ours {t['ours_bytes_per_file']:.1f}, json "
          f"{t['json_bytes_per_file']:.1f}")
    paths = [large.parent / line.rsplit(maxsplit=1)[0] for line in large.read_text().splitlines()]
    metadata.video_infos(paths, index_file=large.parent / "index_ours.npz")  # warm, untraced
    mem = {}
    for name in ("flat", "legacy"):  # each run builds its own dataset; the index is warm
        mem[name] = epoch_memory(large, legacy=name == "legacy", workers=args.workers)
        print(f"{name}: " + ", ".join(f"{k}={v:.1f}" for k, v in mem[name].items()))
    print(f"ratios: index cold ours/json {t['ours_cold'] / t['json_cold']:.2f}, warm "
          f"{t['ours_warm'] / t['json_warm']:.2f}; Python bytes per video legacy/flat "
          f"{mem['legacy']['python_bytes_per_video'] / mem['flat']['python_bytes_per_video']:.1f}"
          f"; worker USS growth per epoch flat {mem['flat']['worker_uss_growth_mb']:.1f} MB vs "
          f"legacy {mem['legacy']['worker_uss_growth_mb']:.1f} MB")


if __name__ == "__main__":
    main()
