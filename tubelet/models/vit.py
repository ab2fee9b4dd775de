"""Vision Transformer for images and videos, with timm's surface and state-dict names.

One class covers timm's ViT, MAE's finetuned ViT and VideoMAE's video ViT:
- `num_frames > 1` makes it a video model: it takes (B,C,T,H,W) and embeds tubelets of
  `tubelet_size` frames, so N = (T/tubelet_size) * (H/p) * (W/p) tokens;
- VideoMAE's finetune model is `class_token=False, global_pool="avg", pos_embed="sincos",
  qkv_bias="qv", num_frames=16, tubelet_size=2`.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tubelet.models.layers import (Attention, Block, LayerScale, PatchEmbed, resize_pos_embed,
                                   sincos_1d, sincos_2d, sincos_3d)
from tubelet.registry import MODELS


class VisionTransformer(nn.Module):
    """ViT / video ViT classifier.

    `global_pool`: "token" classifies the class token; "avg" the mean of the patch tokens.
    `fc_norm`: None means "as timm": with "avg" the final LayerNorm moves after the pooling
    (`norm` becomes Identity, `fc_norm` a LayerNorm), which is what MAE and VideoMAE finetune.
    `pos_embed`: "learn" (a Parameter) or "sincos", VideoMAE's fixed 1D table over the token index,
    kept as a non-persistent buffer: like VideoMAE's, it is not in the state dict; or "sincos2d",
    MAE's fixed 2D table (3D for video: `sincos_3d`), a persistent buffer because MAE's
    checkpoints store it as `pos_embed`.
    `qkv_bias`: True (timm's `qkv.bias`), False, or "qv" (VideoMAE's `q_bias` + `v_bias`).
    `init_values`: layer scale init (None: no layer scale). `head_init_scale` multiplies the
    initial head weights (VideoMAE finetunes with 0.001). `num_classes=0` gives no head.
    `dynamic_img_size` (timm's name): accept other frame counts and sizes than the configured
    ones, with the position embedding resized (learned) or rebuilt (fixed) per forward, as
    dynamic batches (data/dynamic_batch.py) need.
    """

    def __init__(self, *, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "token", embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool | str = True,
                 class_token: bool = True, pos_embed: str = "learn", fc_norm: bool | None = None,
                 init_values: float | None = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, head_drop_rate: float = 0.0, head_init_scale: float = 1.0,
                 num_frames: int = 1, tubelet_size: int = 1, dynamic_img_size: bool = False) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without one")
        if pos_embed not in ("learn", "sincos", "sincos2d"):
            raise ValueError(f"pos_embed must be 'learn', 'sincos' or 'sincos2d', got {pos_embed!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.head_init_scale = head_init_scale
        self.pos_embed_type = pos_embed
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, num_frames=num_frames, tubelet_size=tubelet_size,
                                      dynamic=dynamic_img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        else:
            # filled by init_weights, so building on the meta device and to_empty() restores it too
            self.register_buffer("pos_embed", torch.zeros(1, num_tokens, embed_dim),
                                 persistent=pos_embed == "sincos2d")
        self.pos_drop = nn.Dropout(drop_rate)

        # stochastic depth grows linearly with depth; computed on the CPU so a meta build works
        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=rate, init_values=init_values)
            for rate in drop_path_rates])
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise all parameters and the fixed position table as timm does. Also the step
        after building on the meta device and `to_empty()`."""
        if self.patch_embed.proj.weight.is_meta:
            # nothing to fill yet, and some meta init ops import torch._dynamo (seconds) on first use
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.Conv2d, nn.Conv3d, LayerScale)):
                m.reset_parameters()  # timm keeps PyTorch's default init for the patch conv
            elif isinstance(m, Attention) and m.q_bias is not None:
                nn.init.zeros_(m.q_bias)
                nn.init.zeros_(m.v_bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            table = fixed_pos_table(self.pos_embed_type, self.patch_embed.grid_size, self.embed_dim,
                                    device=self.pos_embed.device)
            self.pos_embed[0, :self.num_prefix_tokens] = 0.0  # a class token gets a zero row, as in MAE
            self.pos_embed[0, self.num_prefix_tokens:] = table
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if isinstance(self.head, nn.Linear):
            self.head.weight.mul_(self.head_init_scale)
            self.head.bias.mul_(self.head_init_scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) or (B,C,T,H,W) -> all tokens after the last block, (B, prefix + N, D)."""
        grid = self.patch_embed.grid_of(x) if self.patch_embed.dynamic else None
        x = self.patch_embed(x)  # (B,C,[T],H,W) -> (B,N,D)
        if self.cls_token is not None:
            cls_token = self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([cls_token, x], dim=1)  # -> (B,1+N,D)
        # cast so a float32 table does not promote bf16 activations under autocast
        x = self.pos_drop(x + self.pos_embed_for(grid).to(x.dtype))
        use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            # non-reentrant checkpointing replays the RNG state, so dropout/drop path match exactly
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        return self.norm(x)

    def pos_embed_for(self, grid: tuple[int, ...] | None) -> torch.Tensor:
        """The position embedding (1, prefix + N, D) for token grid `grid` (None: the configured one)."""
        if grid is None or grid == tuple(self.patch_embed.grid_size):
            return self.pos_embed
        if isinstance(self.pos_embed, nn.Parameter):  # learned: interpolate it, as timm does
            return resize_pos_embed(self.pos_embed, old_grid=self.patch_embed.grid_size,
                                    new_grid=grid, num_prefix_tokens=self.num_prefix_tokens)
        table = fixed_pos_table(self.pos_embed_type, grid, self.embed_dim, device=self.pos_embed.device)
        prefix = self.pos_embed.new_zeros(self.num_prefix_tokens, self.embed_dim)
        return torch.cat([prefix, table]).unsqueeze(0)  # (1, prefix + N, D)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, prefix + N, D) -> logits (B, num_classes), or pooled features (B, D)."""
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)  # (B,N,D) -> (B,D)
        else:
            x = x[:, 0]  # the class token: (B,D)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (0: none), e.g. before finetuning a pretrained model on new classes."""
        self.num_classes = num_classes
        device = self.patch_embed.proj.weight.device
        self.head = nn.Linear(self.embed_dim, num_classes, device=device) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            with torch.no_grad():
                nn.init.trunc_normal_(self.head.weight, std=0.02)
                nn.init.zeros_(self.head.bias)
                self.head.weight.mul_(self.head_init_scale)

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP2 shards one by one (engine/parallel.py): the transformer blocks."""
        return list(self.blocks)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward: less memory, about a third more compute."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @property
    def num_layers(self) -> int:
        """Layer groups for layer-wise lr decay: embeddings, each block, then norm and head."""
        return len(self.blocks) + 2

    def get_layer_id(self, param_name: str) -> int:
        """Layer group of a parameter named as in `self.named_parameters()` (BEiT/VideoMAE's rule):
        0 for the embeddings, i+1 for blocks.i, num_layers-1 for the final norm and head."""
        root = param_name.split(".")[0]
        if root not in self._parameters and root not in self._modules and root not in self._buffers:
            # a wrapper's prefix ("module.", "_orig_mod.") would otherwise land silently in the last group
            raise ValueError(f"{param_name!r} is not a parameter name of this VisionTransformer")
        if root in ("cls_token", "pos_embed", "patch_embed"):
            return 0
        if root == "blocks":
            return int(param_name.split(".")[1]) + 1
        return self.num_layers - 1


def fixed_pos_table(kind: str, grid_size: tuple[int, ...], dim: int, *,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed (N, dim) table of `pos_embed` kind "sincos" (VideoMAE) or "sincos2d" (MAE)."""
    if kind == "sincos":
        return sincos_1d(math.prod(grid_size), dim, device=device)
    return (sincos_2d if len(grid_size) == 2 else sincos_3d)(tuple(grid_size), dim, device=device)


MODELS.add("vit", VisionTransformer)  # any size, e.g. the tiny models of tests and quickstarts

# timm's sizes: name -> (patch_size, embed_dim, depth, num_heads). A `functools.partial` keeps
# VisionTransformer's keyword arguments visible to config validation.
_SIZES = {
    "vit_tiny_patch16_224": (16, 192, 12, 3),
    "vit_small_patch16_224": (16, 384, 12, 6),
    "vit_base_patch16_224": (16, 768, 12, 12),
    "vit_large_patch16_224": (16, 1024, 24, 16),
    "vit_huge_patch14_224": (14, 1280, 32, 16),
}
for _name, (_patch, _dim, _depth, _heads) in _SIZES.items():
    MODELS.add(_name, functools.partial(VisionTransformer, patch_size=_patch, embed_dim=_dim, depth=_depth,
                                        num_heads=_heads))
