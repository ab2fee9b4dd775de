"""Datasets, samplers and loaders of a recipe's `data:` section: the train loader with its
resumable (or dynamic-shape) batch sampler, the val and test loaders that keep a video's views
on one rank, each wrapped for bad-data accounting and device transforms.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tubelet import distributed as dist
from tubelet.build_check import DataOptions, build_at
from tubelet.data.batches import BadData, BatchStream
from tubelet.data.datasets.base import require_labels
from tubelet.data.dynamic_batch import DynamicBatchSampler, check_dynamic_dataset
from tubelet.data.loader import ResumableSampler, ShardSampler, build_loader
from tubelet.data.repeated_aug import RepeatedCollate, set_num_sample
from tubelet.registry import DATASETS, TRANSFORMS

log = logging.getLogger("tubelet")
DATA_TRANSFORM_KEYS = ("transforms", "device_transforms")  # lists a data split node may hold


def num_test_views(data: dict[str, Any]) -> int:
    """Views per video at test: `data.test`'s when the recipe has one, else `data.val`'s."""
    node = data.get("test") or data.get("val") or {}
    return int(node.get("temporal_views", 1) or 1) * int(node.get("spatial_crops", 1) or 1)


def build_transforms(node: dict[str, Any], *, key: str, list_key: str) -> Any:
    from tubelet.data.transforms import Compose
    transforms = [build_at(t, TRANSFORMS, key=f"{key}.{list_key}[{i}]")
                  for i, t in enumerate(node.get(list_key) or [])]
    return Compose(transforms) if transforms else None


def build_dataset(node: dict[str, Any], *, key: str) -> tuple[Any, Any]:
    """(dataset, device transform or None). `transforms` run in the loader workers,
    `device_transforms` on the batch after transfer (the dataset then yields uint8 clips)."""
    device_transform = build_transforms(node, key=key, list_key="device_transforms")
    spec = {k: v for k, v in node.items() if k not in (*DATA_TRANSFORM_KEYS, "num_sample")}
    if device_transform is not None:
        spec["to_float"] = False
    dataset = build_at(spec, DATASETS, key=key,
                       transform=build_transforms(node, key=key, list_key="transforms"))
    return dataset, device_transform


def _stream(loader: Any, dataset: Any, device_transform: Any, *, split: str, seed: int,
            data: DataOptions, device: torch.device, run_dir: Path | None) -> BatchStream:
    """Wrap a loader for bad-data accounting (startup findings first) and device transforms."""
    bad = BadData(split=split, num_files=getattr(dataset, "num_files", len(dataset)),
                  max_fraction=data.max_bad_fraction, run_dir=run_dir, rank=dist.get_rank())
    bad.add(getattr(dataset, "bad_files", []))
    return BatchStream(loader, bad_data=bad, device=device, device_transform=device_transform,
                       train=split == "train", seed=seed)


def build_train_sampler(data: DataOptions, dataset: Any, *, seed: int
                        ) -> ResumableSampler | DynamicBatchSampler:
    """The train batch sampler: fixed `data.batch_size`, or `data.dynamic_batch`."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if data.dynamic_batch is None:
        return ResumableSampler(len(dataset), batch_size=data.batch_size, seed=seed, rank=rank,
                                world_size=world_size)
    sampler = DynamicBatchSampler(len(dataset), seed=seed, rank=rank, world_size=world_size,
                                  **data.dynamic_batch)
    check_dynamic_dataset(dataset, num_frames=data.dynamic_batch["num_frames"])
    log.info("dynamic batches, clips per rank by shape (T x H x W): %s", sampler.summary())
    return sampler


def build_loaders(data: DataOptions, *, seed: int, device: torch.device, train: bool = True,
                  run_dir: Path | None = None
                  ) -> tuple[Any, ResumableSampler | DynamicBatchSampler | None, Any]:
    """(train loader, its resumable sampler, val loader); the train pair is None when `train`
    is False (eval), the val loader is None when the recipe has no `data.val`."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    common = dict(num_workers=data.num_workers, seed=seed, rank=rank,
                  pin_memory=device.type == "cuda", prefetch_factor=data.prefetch_factor,
                  persistent_workers=data.persistent_workers)
    train_loader = sampler = val_loader = None
    if train:
        train_set, device_tf = build_dataset(data.train, key="data.train")
        require_labels(train_set, key="data.train")
        sampler = build_train_sampler(data, train_set, seed=seed)
        num_sample = data.train.get("num_sample", 1)  # repeated augmentation: data/repeated_aug.py
        collate = None if num_sample == 1 else RepeatedCollate(
            num_sample, set_num_sample(train_set, num_sample, key="data.train"))
        train_loader = _stream(build_loader(train_set, sampler=sampler, collate_fn=collate,
                                            **common),
                               train_set, device_tf, split="train", seed=seed, data=data,
                               device=device, run_dir=run_dir)
    if data.val:
        val_loader, _ = build_eval_loader(data, split="val", seed=seed, device=device,
                                          run_dir=run_dir)
    return train_loader, sampler, val_loader


def build_eval_loader(data: DataOptions, *, split: str, seed: int, device: torch.device,
                      run_dir: Path | None = None) -> tuple[Any, Any]:
    """(loader, dataset) of `data.val` or `data.test`: each video on one rank with all its
    views, none padded or repeated, so reduced metrics count every video once."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    eval_set, device_tf = build_dataset(getattr(data, split), key=f"data.{split}")
    require_labels(eval_set, key=f"data.{split}")  # metrics on invented labels would be wrong
    views = getattr(eval_set, "num_views", 1)  # a video's test views stay on one rank
    loader = build_loader(eval_set, batch_size=data.val_batch_size or data.batch_size,
                          sampler=ShardSampler(len(eval_set), rank=rank, world_size=world_size,
                                               group_size=views),
                          num_workers=data.num_workers, seed=seed, rank=rank,
                          pin_memory=device.type == "cuda", prefetch_factor=data.prefetch_factor,
                          persistent_workers=data.persistent_workers)
    return _stream(loader, eval_set, device_tf, split=split, seed=seed, data=data,
                   device=device, run_dir=run_dir), eval_set
