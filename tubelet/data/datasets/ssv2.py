"""Something-Something V2 as published: `labels.json` ({"<template without brackets>": "<id>"}),
`train.json`/`validation.json` (a list of {"id", "label", "template", "placeholders"}) and
videos ROOT/<id>.webm. The class is the template with "[" and "]" removed. `test.json` lists
ids only ([{"id": "1420"}, ...]): it loads unlabelled, for prediction; training and metrics
refuse it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from tubelet.data.datasets.base import SampleTable, check_dir, check_file
from tubelet.data.datasets.video import VideoDataset, default_index_file
from tubelet.data.tables import at_item
from tubelet.data.textfile import read_text
from tubelet.registry import DATASETS, ConfigError, did_you_mean


def _load_json(path: Path, kind: type) -> object:
    try:
        data = json.loads(read_text(path))
    except ValueError as err:
        raise ConfigError(f"{path}:{getattr(err, 'lineno', 1)}: invalid JSON ({err})") from None
    if not isinstance(data, kind):
        raise ConfigError(f"{path}:1: expected a JSON {kind.__name__}")
    return data


def read_labels(path: Path) -> dict[str, int]:
    labels = _load_json(path, dict)
    try:
        return {name: int(k) for name, k in labels.items()}  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"{path}:1: values must be class ids such as \"0\"") from None


def read_items(path: Path, lookup: dict[str, int], *, root: Path, extension: str,
               labels: str) -> list[tuple[Path, int | None, str, int]]:
    """(video, label or None, where, position) per entry. The first entry decides whether the
    file is labelled (a `template`) or not (ids only, as test.json); a mix is refused."""
    rows: list[tuple[Path, int | None, str, int]] = []
    labelled = None
    for k, item in enumerate(_load_json(path, list)):  # type: ignore[arg-type]
        where = f"{path}:[{k}]"  # JSON entries are named by position in the list
        if not isinstance(item, dict) or "id" not in item:
            raise ConfigError(f"{where}: expected an object with an 'id'")
        if labelled is None:
            labelled = "template" in item
        if not labelled:
            if "template" in item or "label" in item:
                raise ConfigError(f"{where}: has a label, but entry [0] has none (test.json "
                                  f"lists ids only); expected one kind throughout")
            rows.append((root / f"{item['id']}{extension}", None, at_item(path), k))
            continue
        if "template" not in item:
            raise ConfigError(f"{where}: expected an object with 'id' and 'template'")
        name = item["template"].replace("[", "").replace("]", "")
        if name not in lookup:
            raise ConfigError(f"{where}: template {name!r} is not in {labels}"
                              f"{did_you_mean(name, lookup)}")
        rows.append((root / f"{item['id']}{extension}", lookup[name], at_item(path), k))
    return rows


@DATASETS.register("ssv2")
class SSv2(VideoDataset):
    """SSv2 `annotations` (train.json, validation.json or test.json) with `labels`
    (labels.json); `subset`
    train draws random clips. SSv2 recipes usually use `sampling: segment`. Clip options: see
    data/datasets/video.py."""

    def __init__(self, annotations: str, *, labels: str, root: str, subset: str = "train",
                 extension: str = ".webm", num_frames: int = 16, stride: int = 2,
                 sampling: str = "segment", target_fps: float | None = None,
                 temporal_views: int = 1, spatial_crops: int = 1, repeat: int = 1,
                 seed: int = 0, backend: str = "pyav", index_file: str | None = None,
                 transform: Callable[..., torch.Tensor] | None = None,
                 to_float: bool = True) -> None:
        path = self.open_annotations(annotations, subset=subset, seed=seed, transform=transform,
                                     temporal_views=temporal_views, spatial_crops=spatial_crops,
                                     repeat=repeat, to_float=to_float)
        self.root = Path(root)
        check_file("labels", Path(labels))
        check_dir("root", self.root)
        lookup = read_labels(Path(labels))
        self.num_classes = len(lookup)
        self.classes = [name for name, _ in sorted(lookup.items(), key=lambda kv: kv[1])]
        samples = SampleTable.build(read_items(path, lookup, root=self.root,
                                               extension=extension, labels=labels))
        self.setup_videos(samples, source=path, index_file=default_index_file(index_file, path),
                          num_frames=num_frames, stride=stride, sampling=sampling,
                          target_fps=target_fps, backend=backend)
