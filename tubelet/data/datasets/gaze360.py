"""Gaze360: head crops as JPEG frames ROOT/<rec>/head/<person>/<frame:06d>.jpg and an annotation
txt with one "<frame path> <gx> <gy> <gz>" per line (the 3D gaze vector of that frame, as in the
official train.txt / validation.txt / test.txt). A sample is a window of `num_frames` frames
(7 by default, as in the paper) centred on the annotated frame; a neighbour frame that does not
exist is replaced by the nearest one that does. The target is the unit gaze vector."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import ClipDataset, SampleTable, check_dir, check_file
from tubelet.data.decode import DecodeError, read_images
from tubelet.data.transforms import RandomHorizontalFlip
from tubelet.data.metadata import parallel_map
from tubelet.data.tables import at_line
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError


def read_annotations(path: Path, *, root: Path) -> SampleTable:
    samples = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where, fields = f"{path}:{lineno}", line.split()
        try:
            frame = int(Path(fields[0]).stem)
            gaze = torch.tensor([float(v) for v in fields[1:4]])
        except (ValueError, IndexError):
            frame, gaze = -1, torch.zeros(0)
        if len(fields) < 4 or frame < 0 or gaze.shape != (3,):
            raise ConfigError(f"{where}: expected '<dir>/<frame number>.jpg <gx> <gy> <gz>', "
                              f"got {line.strip()!r}")
        norm = float(gaze.norm())
        if norm == 0:
            raise ConfigError(f"{where}: the gaze vector is zero")
        samples.append((root / fields[0], gaze / norm, at_line(path), lineno))
    return SampleTable.build(samples)


@DATASETS.register("gaze360")
class Gaze360(ClipDataset):
    """Gaze360 windows from `annotations` (train.txt, validation.txt or test.txt) over the frame
    folders under `root`. Items carry `target`, a unit 3-vector, instead of `label`.
    `flip`: in train, mirror the clip with this probability and negate the gaze's x (the
    horizontal component) with it. `random_horizontal_flip` is refused in `transforms`: it
    would mirror the eyes but leave the gaze pointing the old way."""

    target_key = "target"

    def __init__(self, annotations: str, *, root: str, subset: str = "train",
                 num_frames: int = 7, flip: float = 0.0, repeat: int = 1, seed: int = 0,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        if num_frames < 1 or num_frames % 2 == 0:
            raise ConfigError(f"num_frames: must be odd (a window centred on the annotated "
                              f"frame), got {num_frames}")
        if not 0.0 <= flip <= 1.0:
            raise ConfigError(f"flip: must be in [0, 1], got {flip}")
        if any(isinstance(t, RandomHorizontalFlip) for t in getattr(transform, "transforms", [])):
            raise ConfigError("transforms: random_horizontal_flip would mirror the eyes but not "
                              "the gaze; use gaze360's `flip: 0.5`, which mirrors both")
        super().__init__(subset=subset, seed=seed, transform=transform, repeat=repeat,
                         to_float=to_float)
        self.flip = flip
        path, self.root, self.num_frames = Path(annotations), Path(root), num_frames
        check_file("annotations", path)
        check_dir("root", self.root)
        self.set_samples(read_annotations(path, root=self.root), source=path)
        if not len(self.samples):
            raise ConfigError(f"annotations: {path} lists no frames")
        paths = self.samples.paths  # type: ignore[attr-defined]
        exists = parallel_map(os.path.isfile, [paths.raw(i) for i in range(len(paths))])
        self.bad = {i: f"{self.samples.where(i)}: {paths[i]}: no such file"  # type: ignore
                    for i, ok in enumerate(exists) if not ok}

    def window(self, centre: Path) -> list[Path]:
        """The frame paths of the window around `centre`, missing ones replaced by the nearest
        existing frame (the centre always exists)."""
        number, width = int(centre.stem), len(centre.stem)
        half = self.num_frames // 2
        names = [centre.with_name(f"{number + d:0{width}d}{centre.suffix}")
                 for d in range(-half, half + 1)]
        present = [n.is_file() for n in names]
        out = []
        for k in range(len(names)):
            nearest = min((j for j in range(len(names)) if present[j]),
                          key=lambda j: (abs(j - k), j), default=None)
            if nearest is None:
                raise DecodeError(f"{centre}: no such file")
            out.append(names[nearest])
        return out

    def load(self, i: int, generator: torch.Generator | None, view: int,
             num_views: int) -> torch.Tensor:
        centre = self.samples.paths[i]  # type: ignore[attr-defined]
        return read_images(self.window(centre)).permute(3, 0, 1, 2)  # (C,T,H,W)

    def augment_pair(self, video: torch.Tensor, target: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flip == 0.0 or float(torch.rand((1,), generator=generator)) >= self.flip:
            return video, target
        mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=target.dtype)  # x is horizontal
        return video.flip(-1), target * mirror  # (C,T,H,W), W reversed
