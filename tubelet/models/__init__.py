"""Models. Importing this package registers them in `tubelet.registry.MODELS`."""
from __future__ import annotations

from typing import Any

from torch import nn

from tubelet.models import (classifier, contrastive, mae, resnet3d,  # noqa: F401  (registers)
                            vit)
from tubelet.models.classifier import VideoClassifier
from tubelet.models.mae import MaskedAutoencoder
from tubelet.models.resnet3d import ResNet3D
from tubelet.models.vit import VisionTransformer
from tubelet.registry import MODELS


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name: `create_model("vit_small_patch16_224", num_classes=10)`."""
    return MODELS.get(name, key="model")(**kwargs)


__all__ = ["MaskedAutoencoder", "ResNet3D", "VideoClassifier", "VisionTransformer", "create_model"]
