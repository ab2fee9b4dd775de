"""Precomputed embeddings plus targets, e.g. CLIP features of AVA images for aesthetic-score
regression. One file holds both arrays (.npz or .safetensors, under `features_key` and
`targets_key`), or `path` is a .npy of features (N, D) and `targets` a .npy of targets (N,)
or (N, K). Integer targets are class ids and come out as `label`; float targets as `target`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from tubelet.data.datasets.base import check_file
from tubelet.data.seeding import split_key
from tubelet.registry import DATASETS, ConfigError


def _load_arrays(path: Path, keys: tuple[str, str]) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r"), None
    if path.suffix == ".npz":
        data = np.load(path)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        data = load_file(str(path))
    else:
        raise ConfigError(f"path: {path}: expected .npy, .npz or .safetensors")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConfigError(f"{path}: no array {missing[0]!r}; it holds {sorted(data)}")
    return np.asarray(data[keys[0]]), np.asarray(data[keys[1]])


@DATASETS.register("features")
class Features(Dataset):
    """Items {"features": float32 (D,), "label" or "target", "index", "view": 0, "bad": ""}.
    `transform` (rarely useful here) is applied to the feature vector."""

    def __init__(self, path: str, *, targets: str | None = None,
                 features_key: str = "features", targets_key: str = "targets",
                 subset: str = "train", repeat: int = 1,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        if subset not in ("train", "test"):
            raise ConfigError(f"subset: expected 'train' or 'test', got {subset!r}")
        if repeat < 1:
            raise ConfigError(f"repeat: must be >= 1, got {repeat}")
        check_file("path", Path(path))
        self.features, loaded = _load_arrays(Path(path), (features_key, targets_key))
        if loaded is None:
            if targets is None:
                raise ConfigError("targets: required with a .npy features file")
            check_file("targets", Path(targets))
            loaded = np.load(targets)
        self.targets = torch.from_numpy(np.array(loaded))
        if self.features.ndim != 2 or len(self.features) != len(self.targets):
            raise ConfigError(f"path: {path}: expected features (N, D) and N targets, got "
                              f"{tuple(self.features.shape)} and {tuple(self.targets.shape)}")
        self.is_label = not torch.is_floating_point(self.targets)
        self.target_key = "label" if self.is_label else "target"
        if self.is_label:
            self.num_classes = int(self.targets.max()) + 1
        self.train, self.repeat, self.transform = subset == "train", repeat, transform
        self.bad: dict[int, str] = {}

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        return []

    @property
    def num_files(self) -> int:
        return len(self.targets)

    def __len__(self) -> int:
        return len(self.targets) * self.repeat

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, _ = split_key(key)
        i = index % len(self.targets)
        x = torch.from_numpy(np.array(self.features[i], dtype=np.float32))  # (D,)
        if self.transform is not None:
            x = self.transform(x, generator=None)
        target = self.targets[i]
        target = int(target) if self.is_label else target.float()
        return {"features": x, self.target_key: target, "index": index, "view": 0, "bad": ""}
