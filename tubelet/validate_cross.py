"""Checks across nodes that need no data: what the transforms make against what the model takes,
`num_classes` between model, task and dataset, and keys whose meaning depends on another node.
Runs after every node passed `tubelet.validate`, so the values here have their types. No torch.
"""
from __future__ import annotations

from typing import Any

from tubelet.registry import ConfigError, did_you_mean

# The eval metrics of the built-in tasks (`val/<name>` in metrics.jsonl); a plugin task's are
# not known before it runs, so its `best_metric` is checked at the first eval instead.
TASK_METRICS = {"classification": ("acc1", "acc5", "mean_class_acc"), "mae_pretrain": ("loss",),
                "gaze": ("angular_error",), "score_regression": ("mse", "srcc", "plcc")}


class _Node:
    """A node with its schema entry: `get` falls back to the signature's default."""

    def __init__(self, node: dict[str, Any], spec: dict[str, Any], key: str) -> None:
        self.node, self.spec, self.key = node, spec, key

    def get(self, name: str) -> Any:
        if name in self.node:
            return self.node[name]
        entry = self.spec["params"].get(name)
        return None if entry is None else entry[2]

    def has(self, name: str) -> bool:
        return name in self.spec["params"]

    def where(self, name: str) -> str:
        return f"{self.key}.{name}"


def check_cross(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    regs = schema["registries"]

    def node(value: dict[str, Any], kind: str, key: str) -> _Node:
        return _Node(value, regs[kind][value["type"]], key)

    model = node(cfg["model"], "model", "model")
    # the part that sees the clip, and the part that names the classes
    inp = node(model.node["backbone"], "model", "model.backbone") \
        if isinstance(model.node.get("backbone"), dict) else model
    out = node(model.node["head"], "head", "model.head") \
        if isinstance(model.node.get("head"), dict) else model
    for part in {id(model): model, id(inp): inp}.values():
        _check_geometry(part)
    task = node(cfg["task"], "task", "task")
    _check_classes(out, task)
    data = cfg.get("data") or {}
    for split in ("train", "val", "test"):
        if isinstance(data.get(split), dict):
            _check_split(node(data[split], "dataset", f"data.{split}"), inp, task, regs,
                         dynamic=split == "train" and data.get("dynamic_batch") is not None)
    _check_optimizer(cfg["optimizer"], model, inp)
    _check_best_metric(cfg.get("train") or {}, task, cfg["task"]["type"])
    if (cfg.get("train") or {}).get("early_stop") is not None and not data.get("val"):
        raise ConfigError("train.early_stop: needs data.val to evaluate train.best_metric")
    _check_test(cfg.get("train") or {}, data)
    if cfg["task"].get("reversed_negatives") is True:  # clips played backwards need a time axis
        shape = input_shape(cfg, schema)
        if shape is not None and (len(shape) != 5 or shape[2] < 2):
            raise ConfigError(f"task.reversed_negatives: needs video clips of 2 or more frames; "
                              f"data.train gives batches of shape {shape}")


def input_shape(cfg: dict[str, Any], schema: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of a batch of two clips of `data.train` as the model receives it, when the
    recipe fixes it ((B, C, T, H, W), or (B, C, H, W) for images); None when only the data
    knows (features, real videos without a sizing transform, dynamic batches)."""
    regs, data = schema["registries"], cfg.get("data") or {}
    split = data.get("train")
    if not isinstance(split, dict) or data.get("dynamic_batch") is not None:
        return None
    model = cfg["model"]
    inp_node = model["backbone"] if isinstance(model.get("backbone"), dict) else model
    inp = _Node(inp_node, regs["model"][inp_node["type"]], "")
    ds = _Node(split, regs["dataset"][split["type"]], "data.train")
    size, _ = _output_size(ds, regs)
    if size is None or None in size:
        return None
    channels = inp.get("in_chans") if inp.has("in_chans") else 3
    frames = ds.get("num_frames") if ds.has("num_frames") else None
    child = split.get("dataset")  # a wrapper (two_views, repeat): its child samples the clips
    if frames is None and isinstance(child, dict) and child.get("type") in regs["dataset"]:
        node = _Node(child, regs["dataset"][child["type"]], "")
        frames = node.get("num_frames") if node.has("num_frames") else None
    return (2, channels or 3, *([frames] if frames else []), *size)


def _check_geometry(m: _Node) -> None:
    """Sizes that must divide: the image by the patch, the clip by the tubelet, the width by
    the heads (the model would fail at build or at the first step otherwise)."""
    for whole, part in (("img_size", "patch_size"), ("num_frames", "tubelet_size"),
                        ("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        a, b = m.get(whole), m.get(part)
        if not (m.has(whole) and m.has(part)) or a is None or b is None:
            continue
        for x in a if isinstance(a, list) else [a]:
            if isinstance(x, int) and isinstance(b, int) and b > 0 and x % b:
                raise ConfigError(f"{m.where(whole)}: {x} is not a multiple of "
                                  f"{m.where(part)} ({b})")


def _check_classes(out: _Node, task: _Node) -> None:
    n_model, n_task = out.get("num_classes"), task.get("num_classes")
    if out.has("num_classes") and task.has("num_classes") and n_model and n_task \
            and n_model != n_task:
        raise ConfigError(f"{task.where('num_classes')}: {n_task}, but "
                          f"{out.where('num_classes')} is {n_model}")


def _check_split(ds: _Node, inp: _Node, task: _Node, regs: dict[str, Any], *,
                 dynamic: bool) -> None:
    """The clip a split yields against the model: frames and (when a transform or the dataset
    fixes it) the frame size; the classes the dataset names against the task's."""
    n_data, n_task = ds.get("num_classes"), task.get("num_classes")
    if ds.has("num_classes") and task.has("num_classes") and n_data and n_task \
            and n_data != n_task:
        raise ConfigError(f"{task.where('num_classes')}: {n_task}, but {ds.where('num_classes')} "
                          f"is {n_data}")
    if dynamic or inp.get("dynamic_img_size") or not inp.has("img_size"):
        return
    frames, want = ds.get("num_frames"), inp.get("num_frames")
    if ds.has("num_frames") and inp.has("num_frames") and frames != want:
        raise ConfigError(f"{ds.where('num_frames')}: clips of {frames} frames, but "
                          f"{inp.where('num_frames')} is {want}")
    _check_channels(ds, inp)
    size, where = _output_size(ds, regs)
    img = inp.get("img_size")
    img = tuple(img) if isinstance(img, list) else (img, img)
    if size is not None and size != img:
        raise ConfigError(f"{where}: makes {size[0]}x{size[1]} frames, but "
                          f"{inp.where('img_size')} is {img[0]}x{img[1]}")


def _check_channels(ds: _Node, inp: _Node) -> None:
    """Per-channel transform statistics (`normalize`'s mean and std) need one value per
    channel the model takes."""
    channels = inp.get("in_chans") if inp.has("in_chans") else None
    lists = ("transforms", "device_transforms")
    for list_key in lists:
        for i, step in enumerate(ds.node.get(list_key) or []):
            for name in ("mean", "std"):
                values = step.get(name)
                if channels and isinstance(values, list) and len(values) != channels:
                    raise ConfigError(f"{ds.key}.{list_key}[{i}].{name}: {len(values)} values, "
                                      f"but the model takes {channels} channels "
                                      f"({inp.where('in_chans')})")


def _output_size(ds: _Node, regs: dict[str, Any]) -> tuple[tuple[int, int] | None, str]:
    """The frame size after the split's transforms: the last sizing transform's `size`, else
    the dataset's own `size` (the synthetic set), else unknown (real videos vary)."""
    steps = list(ds.node.get("transforms") or []) + list(ds.node.get("device_transforms") or [])
    for i in range(len(steps) - 1, -1, -1):
        if regs["transform"][steps[i]["type"]]["sets_size"]:
            size = _Node(steps[i], regs["transform"][steps[i]["type"]], "").get("size")
            list_key = "transforms" if i < len(ds.node.get("transforms") or []) else \
                "device_transforms"
            j = i if list_key == "transforms" else i - len(ds.node.get("transforms") or [])
            return _pair(size), f"{ds.key}.{list_key}[{j}].size"
    if ds.has("size") and ds.get("spatial_crops") in (None, 1):
        return _pair(ds.get("size")), ds.where("size")
    return None, ""


def _pair(size: Any) -> tuple[int, int] | None:
    if isinstance(size, int):
        return size, size
    if isinstance(size, list) and len(size) == 2:
        return size[0], size[1]
    return None


def _check_optimizer(opt: dict[str, Any], model: _Node, inp: _Node) -> None:
    if (opt.get("lr") is None) == (opt.get("blr") is None):
        raise ConfigError("optimizer: give exactly one of 'lr' and 'blr'")
    if opt.get("layer_decay") is not None and not (model.spec["layer_ids"]
                                                  and inp.spec["layer_ids"]):
        raise ConfigError(f"optimizer.layer_decay: model {model.node['type']!r} has no layer "
                          "ids to decay by (a ViT has them); remove layer_decay")


def _check_test(train: dict[str, Any], data: dict[str, Any]) -> None:
    """`best` is chosen on data.val: without it there is no best checkpoint to test."""
    if data.get("test") and train.get("test_checkpoint") == "best" and not data.get("val"):
        raise ConfigError("train.test_checkpoint: 'best' is chosen on data.val, which this "
                          "recipe lacks; use 'last' or add data.val")


def _check_best_metric(train: dict[str, Any], task: _Node, task_type: str) -> None:
    metric = train.get("best_metric")
    names = TASK_METRICS.get(task_type)
    if metric is None or names is None:
        return
    if task_type == "classification" and (task.get("num_classes") or 0) <= 5:
        names = tuple(n for n in names if n != "acc5")  # top-5 of 5 classes or fewer is 1
    choices = [f"val/{n}" for n in names]
    if metric not in choices:
        raise ConfigError(f"train.best_metric: {metric!r} is not a metric of task "
                          f"{task_type!r} ({', '.join(choices)}){did_you_mean(metric, choices)}")
