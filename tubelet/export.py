"""`tubelet export CHECKPOINT|RUN_DIR OUT [--encoder]`: the format is OUT's suffix.

- `.safetensors`: the model's tensors, with the model card (class names, eval preprocessing;
  tubelet/model_card.py) as JSON in the header's metadata under "tubelet".
- `.onnx`: the classifier, video (B, C, T, H, W) float32 -> logits (B, num_classes), or with
  `--encoder` the encoder alone -> pooled features (B, D) (what the head sees). The batch axis
  is dynamic; T, H, W are the recipe's clip. The card is in the model's metadata_props.

ONNX goes through PyTorch's TorchScript exporter (`torch.onnx.export(dynamo=False)`, opset 17).
Why not the default (dynamo) exporter of torch >= 2.9: on this ViT it took ~25-50 s against
~2-8 s for the same graph and outputs (equal within 2.4e-7 under onnxruntime), and it needs
`onnxscript` (+ onnx-ir) on top of `onnx`. The TorchScript exporter is deprecated upstream
(a DeprecationWarning, silenced here); when a torch release drops it, switch `_export` to
`dynamo=True, dynamic_shapes=...` and add onnxscript to the `onnx` extra.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
import torch
from torch import nn

from tubelet.model_card import to_metadata
from tubelet.registry import ConfigError

FORMATS = (".safetensors", ".onnx")
OPSET = 17


class Encoder(nn.Module):
    """The pooled features the classifier's head receives: `forward_head(pre_logits=True)` of a
    ViT, `forward_features` of a VideoClassifier (backbone + neck), a MAE's encoder, pooled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if hasattr(model, "encoder") and hasattr(model, "decoder"):  # MAE: its ViT encoder
            model = model.encoder
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "forward_head"):  # a ViT: tokens -> pooled, normed features
            return self.model.forward_head(self.model.forward_features(video), pre_logits=True)
        return self.model.forward_features(video)  # (B, D)


def clip_shape(model: nn.Module) -> tuple[int, ...]:
    """(C, T, H, W) of one clip as the model takes it ((C, H, W) for an image model), from
    its patch embedding."""
    inner = getattr(model, "encoder", None) or getattr(model, "backbone", None) or model
    embed = getattr(inner, "patch_embed", None)
    if embed is None:
        raise ConfigError("export: .onnx needs a model with a patch embedding (a ViT) to know "
                          "the clip's size; export .safetensors instead")
    channels = embed.proj.weight.shape[1]
    frames = [embed.num_frames] if embed.is_video else []
    return (channels, *frames, *embed.img_size)


def export_onnx(model: nn.Module, out: Path, *, example: torch.Tensor,
                metadata: dict[str, str] | None = None, output_name: str = "logits") -> float:
    """Export `model` (eval mode, CPU) to `out` with a dynamic batch axis; seconds taken."""
    import onnx  # the exporter needs it; a clear error when the extra is missing
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=OPSET,
                          input_names=["video"], output_names=[output_name],
                          dynamic_axes={"video": {0: "batch"}, output_name: {0: "batch"}})
    if metadata:
        proto = onnx.load(str(out))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(out))
    return time.perf_counter() - start


def export(checkpoint: str | Path, out: str | Path, *, encoder: bool = False) -> Path:
    """Write `checkpoint`'s model as `out`, in the format its suffix names."""
    from tubelet.models.weights import export_safetensors, resolve_checkpoint
    from tubelet.trained import read_weights_and_card
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"export: {out}: unknown format {out.suffix!r}; the suffix is one of "
                          f"{', '.join(FORMATS)}")
    if out.suffix == ".safetensors":
        if encoder:
            raise ConfigError("export: --encoder is for .onnx (a .safetensors export holds all "
                              "the weights)")
        path = resolve_checkpoint(checkpoint, key="checkpoint")
        _, card, _ = read_weights_and_card(path)
        return export_safetensors(checkpoint, out, metadata=to_metadata(card) if card else None)
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("export: .onnx needs the onnx package (pip install 'tubelet[onnx]')") \
            from None
    from tubelet.trained import load_trained
    trained = load_trained(checkpoint)
    model = Encoder(trained.model).eval() if encoder else trained.model
    if not encoder and trained.card.get("task") == "mae_pretrain":
        raise ConfigError("export: a pretraining (MAE) model has no classifier; pass --encoder "
                          "for its encoder's features")
    example = torch.zeros(1, *clip_shape(trained.model))
    out.parent.mkdir(parents=True, exist_ok=True)
    card: dict = {**trained.card, "onnx_output": "features" if encoder else "logits"}
    export_onnx(model, out, example=example, metadata=to_metadata(card),
                output_name="features" if encoder else "logits")
    return out
