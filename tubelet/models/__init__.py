"""Models. Importing this package registers them in `tubelet.registry.MODELS`."""
from __future__ import annotations

from typing import Any

from torch import nn

from tubelet.models import vit  # noqa: F401  (registers the ViT sizes)
from tubelet.models.vit import VisionTransformer
from tubelet.registry import MODELS


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name: `create_model("vit_small_patch16_224", num_classes=10)`."""
    return MODELS.get(name, key="model")(**kwargs)


__all__ = ["VisionTransformer", "create_model"]
