"""Images in class subfolders, ROOT/<class>/<image>, read as 1-frame clips (C, 1, H, W), so
image and video models share one pipeline (ImageNet: ROOT = .../train or .../val)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import ClipDataset, SampleTable, check_dir
from tubelet.data.decode import read_image
from tubelet.registry import DATASETS, ConfigError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@DATASETS.register("image_folder")
class ImageFolder(ClipDataset):
    """Classes are the sorted subfolder names; images are found recursively below each."""

    def __init__(self, root: str, *, subset: str = "train", repeat: int = 1, seed: int = 0,
                 extensions: list[str] | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        super().__init__(subset=subset, seed=seed, transform=transform, repeat=repeat,
                         to_float=to_float)
        self.root = Path(root)
        check_dir("root", self.root)
        suffixes = tuple(e.lower() for e in (extensions or EXTENSIONS))
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ConfigError(f"root: no class subfolders in {str(self.root)!r}")
        self.num_classes = len(self.classes)
        rows = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (self.root / name).rglob("*")
                           if p.suffix.lower() in suffixes and p.is_file())
            rows += [(p, label, "{path}", 0) for p in files]
        self.samples = SampleTable.build(rows)
        if not len(self.samples):
            raise ConfigError(f"root: no images with extensions {list(suffixes)} under "
                              f"{str(self.root)!r}")

    def load(self, i: int, generator: torch.Generator | None, view: int,
             num_views: int) -> torch.Tensor:
        path = self.samples.paths[i]  # type: ignore[attr-defined]
        return read_image(path).permute(2, 0, 1).unsqueeze(1)  # (C,1,H,W)
