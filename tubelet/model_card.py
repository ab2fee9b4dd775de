"""What travels with a trained model so that a checkpoint alone is enough to predict: the class
names and the recipe's eval preprocessing (clip sampling, views, transforms), beside the model
node that builds the network.

The card is plain data (str, int, float, bool, None, lists, dicts), so a checkpoint holding it
still loads with `torch.load(..., weights_only=True)`; a `.safetensors` export holds it as JSON
in its metadata under "tubelet", an ONNX export in its metadata_props under the same name.

    {"version": 1,
     "classes": ["move_left_slow", ...] | None,    # None: the dataset had no names
     "model": {"type": "vit", ...},                # the recipe's model node (no `pretrained`)
     "task": "classification",
     "clip": {"num_frames": 8, "stride": 2, "sampling": "interval", "target_fps": None,
              "temporal_views": 1, "spatial_crops": 1},
     "transforms": [{"type": "normalize", "mean": [...], "std": [...]}],
     "device_transforms": [],
     "source": "data.val",                         # the split the preprocessing came from
     "imports": []}                                # the recipe's plugin modules

A checkpoint written before cards existed still has its resolved recipe: `card_from_recipe`
reads the same facts from it (the dataset constructor's defaults fill what the node left
out), without class names.
"""
from __future__ import annotations

import inspect
import json
from typing import Any

from tubelet.registry import DATASETS, ConfigError

CARD_KEY = "inference"  # the checkpoint key; "tubelet" in safetensors / ONNX metadata
METADATA_KEY = "tubelet"
CARD_VERSION = 1
# how a dataset samples an eval clip: the VideoDataset attributes (and constructor keywords)
CLIP_KEYS = ("num_frames", "stride", "sampling", "target_fps", "temporal_views",
             "spatial_crops")


def dataset_classes(dataset: Any) -> list[str] | None:
    """The class names of a built dataset (`classes`), looking through `repeat` wrappers;
    None when it has none (features, composed sets, regression)."""
    while dataset is not None and not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    return [str(c) for c in classes] if classes else None


def clip_of(dataset: Any, *, single_view: bool = False) -> dict[str, Any]:
    """How `dataset` samples an eval clip (CLIP_KEYS); `single_view`: one temporal view and
    one crop, whatever the dataset's (a train set's clip stands in for a missing val set)."""
    clip = {k: getattr(dataset, k) for k in CLIP_KEYS if hasattr(dataset, k)}
    clip = {k: (float(v) if k == "target_fps" and v is not None else v) for k, v in clip.items()}
    if single_view:
        clip.update(temporal_views=1, spatial_crops=1)
    return clip


def make_card(*, classes: list[str] | None, model: dict[str, Any], task: str | None,
              clip: dict[str, Any], transforms: list[Any] | None,
              device_transforms: list[Any] | None, source: str,
              imports: list[str] | None) -> dict[str, Any]:
    """A card from its facts: `model` is the model node (its `pretrained` is dropped: the
    checkpoint holds the weights), `source` the split the preprocessing came from."""
    return {"version": CARD_VERSION, "classes": classes,
            "model": {k: v for k, v in model.items() if k != "pretrained"},
            "task": task, "clip": clip, "transforms": list(transforms or []),
            "device_transforms": list(device_transforms or []), "source": source,
            "imports": list(imports or [])}


def card_from_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The card of a checkpoint saved before cards existed, from its resolved recipe: clip
    options the node leaves out are the dataset constructor's defaults. No class names."""
    data = recipe.get("data") or {}
    source = "data.val" if data.get("val") else "data.train"
    node = data.get("val") or data.get("train") or {}
    defaults = {}
    if node.get("type") in DATASETS.names():
        import tubelet.data.datasets  # noqa: F401 - registers the formats
        params = inspect.signature(DATASETS.get(node["type"])).parameters
        defaults = {k: p.default for k, p in params.items()
                    if k in CLIP_KEYS and p.default is not inspect.Parameter.empty}
    clip = {k: node.get(k, defaults.get(k)) for k in CLIP_KEYS if k in node or k in defaults}
    if source == "data.train":
        clip.update(temporal_views=1, spatial_crops=1)
    return make_card(classes=None, model=recipe["model"],
                     task=(recipe.get("task") or {}).get("type"), clip=clip,
                     transforms=node.get("transforms"),
                     device_transforms=node.get("device_transforms"), source=source,
                     imports=recipe.get("imports"))


def card_of_checkpoint(state: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(card, why the class names are missing or None). The card is None when the checkpoint
    holds neither a card nor a recipe (a foreign checkpoint)."""
    card = state.get(CARD_KEY)
    if isinstance(card, dict):
        why = None if card.get("classes") else "the training dataset had no class names"
        return card, why
    if isinstance(state.get("recipe"), dict) and isinstance(state["recipe"].get("model"), dict):
        return card_from_recipe(state["recipe"]), ("the checkpoint was saved before class "
                                                   "names were stored with the model")
    return None, None


def to_metadata(card: dict[str, Any]) -> dict[str, str]:
    """The card as string metadata (safetensors and ONNX hold str -> str)."""
    return {METADATA_KEY: json.dumps(card, sort_keys=True)}


def from_metadata(metadata: dict[str, str] | None, *, where: str) -> dict[str, Any] | None:
    text = (metadata or {}).get(METADATA_KEY)
    if text is None:
        return None
    try:
        card = json.loads(text)
    except ValueError:
        raise ConfigError(f"{where}: its '{METADATA_KEY}' metadata is not JSON") from None
    if not isinstance(card, dict):
        raise ConfigError(f"{where}: its '{METADATA_KEY}' metadata is not a JSON object")
    return card
