"""Load checkpoints as they were released: MAE, VideoMAE (pretrain and finetune), timm, ours.

`load_pretrained(model, path)` reads the file (or a run directory's `checkpoints/last.pt`),
unwraps the state dict, renames foreign keys to ours, adapts what a rule covers, loads, and
returns a `LoadReport`. The rules, each reported by name:
- prefixes `module.`, `_orig_mod.`, and `encoder.` / `backbone.` when the model has none;
- a contrastive model's `momentum.*` encoder, `projector`, `predictor` and `queue` are skipped
  when the target lacks them: a probe or finetune gets the online `backbone`;
- VideoMAE's `gamma_1/2` are our `ls1/ls2.gamma`; MAE's `decoder_embed/_blocks/_norm/_pred/
  _pos_embed` are our MAE's `encoder_to_decoder` / `decoder.*`; a pretraining decoder is skipped
  when loading into a classifier;
- one `qkv.bias` <-> VideoMAE's `q_bias` + `v_bias` (the key bias is a no-op under softmax);
- `pos_embed`: bicubic in space, linear in time, when `img_size` or `num_frames` differ;
- a 2D patch embedding is inflated to a tubelet (repeated over time, divided by its length);
- `head.*` is reset (kept at its init) when the class count differs.
Any other shape mismatch is a `ConfigError` naming the key and both shapes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tubelet.models.layers import resize_pos_embed
from tubelet.registry import ConfigError
from tubelet.rundir import load_reason

log = logging.getLogger("tubelet")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
DECODER_KEYS = ("decoder", "mask_token", "encoder_to_decoder")
# a contrastive model's parts beside its online `backbone` (models/contrastive.py): skipped
# unless the target has them, so a probe or finetune loads the online encoder only
CONTRASTIVE_KEYS = ("momentum.", "projector.", "predictor.", "queue", "queue_ptr")
MAE_RENAMES = {"decoder_embed.": "encoder_to_decoder.", "decoder_blocks.": "decoder.blocks.",
               "decoder_norm.": "decoder.norm.", "decoder_pred.": "decoder.head.",
               "decoder_pos_embed": "decoder.pos_embed"}


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)   # "key: rule"
    reset: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # dropped on purpose (a pretraining decoder)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        for name in ("resized", "reset", "skipped", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"{name} {len(keys)}: {shown}")
        return "\n".join(lines)


def resolve_checkpoint(path: str | Path, *, key: str = "model.pretrained") -> Path:
    """A file, or a run directory -> its final checkpoint `checkpoints/last.pt`."""
    path = Path(path)
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise ConfigError(f"{key}: run directory {str(path)!r} has no "
                              "checkpoints/last.pt (did its training finish?)")
        return last
    if not path.is_file():
        raise ConfigError(f"{key}: {str(path)!r} not found")
    return path


def read_state_dict(path: str | Path, *, key: str = "model.pretrained") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: ours (`model`), MAE (`model`), VideoMAE (`model` or
    `module`), a bare timm state dict, or a `.safetensors` file."""
    path = resolve_checkpoint(path, key=key)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a torn or foreign file
            raise ConfigError(f"{key}: {path}: not a readable safetensors file "
                              f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    # weights_only: a checkpoint is data; MAE's files also pickle an argparse Namespace
    # (`args`), which is why that one class is allowed.
    import argparse
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, empty, hostile: the reason, in one line
        raise ConfigError(f"{key}: {path}: {load_reason(e)}") from None
    for key in ("model", "module", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"{key}: {str(path)!r} holds no state dict "
                          "(looked for 'model', 'module', 'state_dict' or a flat dict)")
    return dict(state)


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def rename_keys(state: dict[str, torch.Tensor], model_keys: set[str], report: LoadReport
                ) -> dict[str, torch.Tensor]:
    """Foreign names -> ours, for a target with `model_keys`."""
    target_is_mae = "mask_token" in model_keys
    target_has_encoder = any(k.startswith("encoder.") for k in model_keys)
    target_has_backbone = any(k.startswith("backbone.") for k in model_keys)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _strip(key, WRAPPER_PREFIXES)
        if new.startswith(CONTRASTIVE_KEYS) and new not in model_keys:
            report.skipped.append(f"{new}: contrastive pretraining head or momentum encoder")
            continue
        new = new.replace(".gamma_1", ".ls1.gamma").replace(".gamma_2", ".ls2.gamma")
        for old, ours in MAE_RENAMES.items():
            if new.startswith(old):
                new = ours + new[len(old):]
        is_decoder = new.startswith(DECODER_KEYS)
        if target_is_mae:
            if not is_decoder and not new.startswith("encoder."):
                new = "encoder." + new  # MAE / timm encoder keys sit at the top level
        elif is_decoder:
            report.skipped.append(f"{new}: pretraining decoder")
            continue
        else:
            if not target_has_encoder:
                new = _strip(new, ("encoder.",))
            if not target_has_backbone:
                new = _strip(new, ("backbone.",))
            elif not new.startswith(("backbone.", "neck.", "head.")):
                new = "backbone." + new
        out[new] = value
    return out


def _convert_qkv_bias(state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor],
                      report: LoadReport) -> None:
    for key in [k for k in state if k.endswith("attn.qkv.bias")]:
        base = key[:-len("qkv.bias")]
        if base + "q_bias" in model_state and key not in model_state:
            q, _, v = state.pop(key).chunk(3)
            state[base + "q_bias"], state[base + "v_bias"] = q, v
            report.resized.append(f"{key}: split into q_bias, v_bias (k bias dropped)")
    for key in [k for k in state if k.endswith("attn.q_bias")]:
        base = key[:-len("q_bias")]
        if base + "qkv.bias" in model_state and key not in model_state:
            q, v = state.pop(key), state.pop(base + "v_bias")
            state[base + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
            report.resized.append(f"{base}qkv.bias: from q_bias, v_bias (zero k bias)")


def _old_grid(num_tokens: int, new_grid: tuple[int, ...], patch_size: int) -> tuple[int, ...]:
    """The grid a checkpoint's position embedding was trained on, from its token count."""
    if len(new_grid) == 2:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"{num_tokens} tokens are not a square grid")
        return side, side
    num_t, rows, cols = new_grid
    candidates = [(t, s, s) for t in range(1, num_tokens + 1) if num_tokens % t == 0
                  for s in [math.isqrt(num_tokens // t)] if s * s == num_tokens // t]
    # prefer the model's own temporal size, then its spatial size, then 224 px (pretraining)
    for pick in (lambda c: c[0] == num_t, lambda c: c[1:] == (rows, cols),
                 lambda c: c[1] == 224 // patch_size):
        chosen = [c for c in candidates if pick(c)]
        if len(chosen) == 1:
            return chosen[0]
    raise ValueError(f"cannot tell the (T, H, W) grid of {num_tokens} tokens")


def _resize_pos_embed(key: str, value: torch.Tensor, owner: nn.Module, report: LoadReport
                      ) -> torch.Tensor:
    """A learned (1, prefix + N_old, D) table -> the owner's grid; a class-token row the model
    lacks is dropped, one it has but the checkpoint lacks is zero."""
    prefix = getattr(owner, "num_prefix_tokens", 0)
    new_grid = tuple(owner.patch_embed.grid_size)
    patch = owner.patch_embed.patch_size[0]
    for ckpt_prefix in dict.fromkeys((prefix, 1 - prefix, 0)):
        try:
            old = _old_grid(value.shape[1] - ckpt_prefix, new_grid, patch)
            break
        except ValueError as e:
            error = e
    else:
        raise ConfigError(f"model.pretrained: {key}: {error}") from None
    rows = value[:, ckpt_prefix:]
    grid = resize_pos_embed(rows, old_grid=old, new_grid=new_grid)
    cls = value[:, :prefix] if ckpt_prefix >= prefix else value.new_zeros(1, prefix, value.shape[2])
    report.resized.append(f"{key}: grid {old} -> {new_grid}")
    return torch.cat([cls[:, :prefix], grid], dim=1)


def _adapt(key: str, value: torch.Tensor, target: torch.Tensor, model: nn.Module,
           report: LoadReport) -> torch.Tensor | None:
    """`value` reshaped to `target`'s shape by a rule, or None when the key is reset."""
    name = key.rsplit(".", 1)[-1]
    owner = model.get_submodule(key.rsplit(".", 1)[0]) if "." in key else model
    if name == "pos_embed" and hasattr(owner, "patch_embed") and value.ndim == 3:
        return _resize_pos_embed(key, value, owner, report)
    if key.endswith("patch_embed.proj.weight") and value.shape[:2] == target.shape[:2]:
        # keep a still video's embedding: the kernel's sum over time is what a static input sees
        if value.ndim == 4 and target.ndim == 5:
            t = target.shape[2]
            report.resized.append(f"{key}: 2D patch inflated to a {t}-frame tubelet")
            return value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        if value.ndim == 5 and value.shape[3:] == target.shape[-2:]:
            total = value.sum(dim=2)  # (D, C, p, p)
            if target.ndim == 4:
                report.resized.append(f"{key}: {value.shape[2]}-frame tubelet summed to a 2D patch")
                return total
            t = target.shape[2]
            report.resized.append(f"{key}: tubelet of {value.shape[2]} -> {t} frames")
            return total.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    if key.startswith("head."):
        report.reset.append(f"{key}: {tuple(value.shape)} -> {tuple(target.shape)}")
        return None
    return value


@torch.no_grad()
def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Rename, adapt and load `state` into `model`; returns the report (also logged)."""
    report = LoadReport()
    model_state = model.state_dict()
    state = rename_keys(state, set(model_state), report)
    _convert_qkv_bias(state, model_state, report)
    to_load: dict[str, torch.Tensor] = {}
    buffers = dict(model.named_buffers())
    for key, value in state.items():
        if key not in model_state:
            if key in buffers:  # a fixed table the model computes itself (VideoMAE's sin-cos)
                report.skipped.append(f"{key}: the model's table is fixed")
            else:
                report.unexpected.append(key)
            continue
        target = model_state[key]
        if value.shape != target.shape:
            value = _adapt(key, value, target, model, report)
            if value is None:
                continue
            if value.shape != target.shape:
                raise ConfigError(
                    f"model.pretrained: {key} has shape {tuple(state[key].shape)} in the checkpoint "
                    f"but {tuple(target.shape)} in the model, and no rule resizes it")
        to_load[key] = value.to(target.dtype)
        report.loaded.append(key)
    _classify_finetune_keys(report, model_state, to_load)
    model.load_state_dict(to_load, strict=False)
    return report


def _classify_finetune_keys(report: LoadReport, model_state: dict[str, torch.Tensor],
                            loaded: dict[str, torch.Tensor]) -> None:
    """What a pretraining checkpoint cannot hold is expected, not missing (as in MAE's and
    VideoMAE's finetuning): a new `head` and `fc_norm` keep their init, and the encoder's final
    `norm` is dropped by a model that normalises after pooling."""
    reset = {r.split(":")[0] for r in report.reset}
    for key in model_state:
        if key in loaded or key in reset:
            continue
        leaf = key.split(".")
        if "head" in leaf[:-1] and leaf[0] != "decoder" or "fc_norm" in leaf[:-1]:
            report.reset.append(f"{key}: not in the checkpoint, kept at init")
        else:
            report.missing.append(key)
    for key in list(report.unexpected):
        base, _, leaf = key.rpartition(".")
        fc_key = (base[:-len("norm")] if base.endswith("norm") else "") + f"fc_norm.{leaf}"
        if base.split(".")[-1] == "norm" and fc_key in model_state:
            report.unexpected.remove(key)
            report.skipped.append(f"{key}: the model normalises after pooling (fc_norm)")


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load the weights at `path` (file or run directory) into `model`; log the report."""
    resolved = resolve_checkpoint(path)
    report = load_state_dict_into(model, read_state_dict(resolved))
    log.info("pretrained weights from %s:\n%s", resolved, report)
    if not report.clean:
        log.warning("pretrained weights from %s: %d missing, %d unexpected keys (see above)",
                    resolved, len(report.missing), len(report.unexpected))
    return report


def export_safetensors(path: str | Path, out: str | Path, *,
                       metadata: dict[str, str] | None = None) -> Path:
    """Write the model weights of a checkpoint (or run directory) as a `.safetensors` file,
    with string `metadata` in its header (the model card, see tubelet/model_card.py)."""
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in read_state_dict(path, key="checkpoint").items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=metadata)
    return out
