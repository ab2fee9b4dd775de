"""Datasets made of datasets: `composed` mixes several sets in one run (with sampling weights,
as VGGT's ComposedDataset), `repeat` shows a small set several times per epoch.

    data.train:
      type: composed
      weights: [3, 1]            # omit to concatenate
      num_samples: 20000         # samples per epoch (default: the sum of the lengths)
      datasets:
        - {type: kinetics, annotations: k400/train.csv, root: k400/train, transforms: [...]}
        - {type: ssv2, annotations: ssv2/train.json, labels: ssv2/labels.json, root: ssv2/videos}

A child without its own `transforms` uses the parent's. Items carry `source`, the child's number.
"""
from __future__ import annotations

import bisect
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from tubelet.data.seeding import sample_generator, split_key, with_index
from tubelet.registry import DATASETS, TRANSFORMS, ConfigError, build, not_a_node, validate


def build_child(node: Any, *, key: str, transform: Callable[..., torch.Tensor] | None,
                to_float: bool) -> Dataset:
    """Build one child `{type: ..., transforms: [...], ...}` node, its errors under `key`."""
    from tubelet.data.transforms import Compose
    if not isinstance(node, dict):
        raise not_a_node(node, key=key)
    steps = node.get("transforms")
    for i, t in enumerate(steps or []):
        validate(t, TRANSFORMS, key=f"{key}.transforms[{i}]")
    spec = {k: v for k, v in node.items() if k != "transforms"}
    validate(spec, DATASETS, key=key, runtime=("transform", "to_float"))
    if steps:
        transform = Compose([build(t, TRANSFORMS) for t in steps])
    try:
        return build(spec, DATASETS, transform=transform, to_float=to_float)
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


@DATASETS.register("composed")
class ComposedDataset(Dataset):
    def __init__(self, datasets: list[dict], *, weights: list[float] | None = None,
                 num_samples: int | None = None, seed: int = 0,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        if not datasets:
            raise ConfigError("datasets: needs at least one dataset")
        if weights is not None and (len(weights) != len(datasets) or min(weights) < 0
                                    or sum(weights) <= 0):
            raise ConfigError(f"weights: need {len(datasets)} non-negative weights with a "
                              f"positive sum, got {weights}")
        self.datasets = [build_child(node, key=f"datasets[{k}]", transform=transform,
                                     to_float=to_float) for k, node in enumerate(datasets)]
        self.offsets = [0]
        for d in self.datasets:
            self.offsets.append(self.offsets[-1] + len(d))
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.num_samples = num_samples or self.offsets[-1]
        self.seed = seed

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        return [b for d in self.datasets for b in getattr(d, "bad_files", [])]

    @property
    def num_files(self) -> int:
        return sum(getattr(d, "num_files", len(d)) for d in self.datasets)

    @property
    def variable_frames(self) -> bool:
        return all(getattr(d, "variable_frames", False) for d in self.datasets)

    @property
    def unlabelled(self) -> str | None:
        """The first child's unlabelled annotation file (see base.require_labels), or None."""
        return next((d.unlabelled for d in self.datasets if getattr(d, "unlabelled", None)),
                    None)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = split_key(key)
        if self.weights is None:
            k = bisect.bisect_right(self.offsets, index % self.offsets[-1]) - 1
            j = index % self.offsets[-1] - self.offsets[k]
        else:
            g = sample_generator(self.seed, epoch, index)
            k = int(torch.multinomial(self.weights, 1, generator=g))
            j = int(torch.randint(0, len(self.datasets[k]), (1,), generator=g))
        item = self.datasets[k][with_index(key, j, epoch)]
        return {**item, "index": index, "source": k}


@DATASETS.register("repeat")
class RepeatDataset(Dataset):
    """`dataset` shown `times` times per epoch; each copy draws its own random clips."""

    def __init__(self, dataset: dict, *, times: int,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        if times < 1:
            raise ConfigError(f"times: must be >= 1, got {times}")
        self.dataset = build_child(dataset, key="dataset", transform=transform, to_float=to_float)
        self.times = times

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        return getattr(self.dataset, "bad_files", [])

    @property
    def num_files(self) -> int:
        return getattr(self.dataset, "num_files", len(self.dataset))

    @property
    def variable_frames(self) -> bool:
        return getattr(self.dataset, "variable_frames", False)

    @property
    def unlabelled(self) -> str | None:
        return getattr(self.dataset, "unlabelled", None)

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = split_key(key)
        copy, j = divmod(index, len(self.dataset))
        # A distinct "epoch" per copy gives each copy its own per-sample generator.
        item = self.dataset[with_index(key, j, epoch * self.times + copy)]
        return {**item, "index": index}
