"""Masked autoencoders: MAE (images, random mask) and VideoMAE (videos, tube mask).

The encoder is our `VisionTransformer` (so its weights are a finetuning checkpoint's backbone,
under an `encoder.` prefix as in VideoMAE's pretraining checkpoints) and runs on the visible
tokens only. A narrow decoder takes the encoded tokens plus one shared `mask_token` per hidden
position and predicts the pixels of the hidden tokens. The model returns predictions and the mask;
the loss (masked-patch MSE, `norm_pix_loss`) belongs to the `mae_pretrain` task.
"""
from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tubelet.models.layers import Block
from tubelet.models.masking import gather_tubelets, num_hidden, random_mask, tube_mask
from tubelet.models.vit import VisionTransformer, fixed_pos_table
from tubelet.registry import MODELS, ConfigError


class MAEDecoder(nn.Module):
    """Blocks, norm and a linear `head` to pixels; names as VideoMAE's `decoder.` keys."""

    def __init__(self, *, grid_size: tuple[int, ...], num_prefix_tokens: int, embed_dim: int,
                 depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool | str,
                 init_values: float | None, patch_dim: int, pos_embed: str) -> None:
        super().__init__()
        self.grid_size, self.num_prefix_tokens = tuple(grid_size), num_prefix_tokens
        self.pos_embed_type = "sincos2d" if pos_embed == "sincos2d" else "sincos"
        num_tokens = num_prefix_tokens + functools.reduce(lambda a, b: a * b, grid_size)
        # MAE stores its fixed table (`decoder_pos_embed`); VideoMAE recomputes it
        self.register_buffer("pos_embed", torch.zeros(1, num_tokens, embed_dim),
                             persistent=self.pos_embed_type == "sincos2d")
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  init_values=init_values) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, patch_dim)

    def fill_pos_embed(self) -> None:
        table = fixed_pos_table(self.pos_embed_type, self.grid_size, self.pos_embed.shape[-1],
                                device=self.pos_embed.device)
        self.pos_embed.zero_()
        self.pos_embed[0, self.num_prefix_tokens:] = table

    def forward(self, x: torch.Tensor, *, num_predicted: int, use_checkpoint: bool = False
                ) -> torch.Tensor:
        """(B, L, Dd) with the mask tokens last -> (B, num_predicted, patch_dim)."""
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        return self.head(self.norm(x[:, -num_predicted:]))


class MaskedAutoencoder(nn.Module):
    """MAE / VideoMAE pretraining model. `num_frames > 1` makes it VideoMAE-shaped.

    `mask_type`: "tube" (VideoMAE) or "random" (MAE); None picks tube for video, random for
    images. `decoder_bias`: whether `encoder_to_decoder` has a bias (MAE's `decoder_embed` does,
    VideoMAE's does not). Returns {"pred": (B, N_masked, t*p*p*C), "mask": (B, N) bool}.
    """

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool | str = True, class_token: bool = False, pos_embed: str = "sincos",
                 init_values: float | None = None, drop_path_rate: float = 0.0,
                 num_frames: int = 1, tubelet_size: int = 1, decoder_embed_dim: int = 384,
                 decoder_depth: int = 4, decoder_num_heads: int = 6, decoder_bias: bool = False,
                 mask_type: str | None = None, mask_ratio: float = 0.75) -> None:
        super().__init__()
        self.mask_type = mask_type or ("tube" if num_frames > 1 else "random")
        # ConfigErrors: a recipe's model node reports them as "model.<key>: ...", exit 2
        if self.mask_type not in ("tube", "random"):
            raise ConfigError(f"mask_type: expected 'tube' or 'random', got {mask_type!r}")
        if self.mask_type == "tube" and num_frames == 1:
            raise ConfigError("mask_type: 'tube' needs a video model (num_frames > 1)")
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio: must be in [0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.encoder = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
            global_pool="token" if class_token else "avg", fc_norm=False, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            class_token=class_token, pos_embed=pos_embed, init_values=init_values,
            drop_path_rate=drop_path_rate, num_frames=num_frames, tubelet_size=tubelet_size)
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_embed_dim, bias=decoder_bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        patch_dim = in_chans * tubelet_size * patch_size * patch_size
        hidden = num_hidden(self.mask_type, self.encoder.patch_embed.grid_size, mask_ratio)
        if hidden == self.num_patches:  # MAE's keep count can round down to nothing
            raise ConfigError(f"mask_ratio: {mask_ratio} of {self.num_patches} tokens "
                              f"({self.mask_type} mask) leaves no token visible")
        if hidden == 0:  # the loss is a mean over hidden tokens: of none, it is no number
            raise ConfigError(f"mask_ratio: {mask_ratio} of {self.num_patches} tokens "
                              f"({self.mask_type} mask) hides none; the loss is computed on "
                              f"hidden tokens")
        self.decoder = MAEDecoder(
            grid_size=self.encoder.patch_embed.grid_size,
            num_prefix_tokens=self.encoder.num_prefix_tokens, embed_dim=decoder_embed_dim,
            depth=decoder_depth, num_heads=decoder_num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, init_values=init_values, patch_dim=patch_dim, pos_embed=pos_embed)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """MAE's and VideoMAE's pretraining init: xavier-uniform linears and patch projection
        (as a linear), trunc-normal mask token; fixed tables filled."""
        self.encoder.init_weights()
        if self.mask_token.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        proj = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder.fill_pos_embed()

    @property
    def num_patches(self) -> int:
        return self.encoder.patch_embed.num_patches

    def draw_mask(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B, N) bool, True = hidden; from the global RNG on `device` (restored on resume)."""
        if self.mask_type == "tube":
            return tube_mask(batch_size, self.encoder.patch_embed.grid_size,
                             mask_ratio=self.mask_ratio, device=device)
        return random_mask(batch_size, self.num_patches, mask_ratio=self.mask_ratio, device=device)

    def embed_visible(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The patch embedding of the visible tubelets only, (B, N_vis, D): the patch conv as a
        matmul on the gathered pixels, so its forward and weight gradient touch 1 - mask_ratio of
        the video instead of all of it (it equals `patch_embed(x)[~mask]`)."""
        proj = self.encoder.patch_embed.proj
        if x.ndim == 5 and not self.encoder.patch_embed.is_video:
            x = x.squeeze(2)  # a 1-frame clip is an image
        self.encoder.patch_embed.check_input(x)
        visible = gather_tubelets(x, ~mask, patch_size=self.patch_size,
                                  tubelet_size=self.tubelet_size)  # (B, N_vis, C, t*p*p)
        # the tubelets come in the conv weight's (C, [t,] p, p) order: its flat view is the matrix
        weight = proj.weight.reshape(proj.weight.shape[0], -1)  # (D, C*t*p*p), no copy
        return nn.functional.linear(visible.flatten(2), weight.to(visible.dtype), proj.bias)

    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,C,[T],H,W) and a (B,N) mask -> the encoded visible tokens (B, prefix + N_vis, D)."""
        enc = self.encoder
        x = self.embed_visible(x, mask)  # (B, N_vis, D), the same count per sample
        B, D = x.shape[0], x.shape[-1]
        pos = enc.pos_embed.to(x.dtype)
        prefix = enc.num_prefix_tokens
        x = x + pos[:, prefix:].expand(B, -1, -1)[~mask].reshape(B, -1, D)
        if enc.cls_token is not None:
            cls = (enc.cls_token + pos[:, :prefix]).to(x.dtype).expand(B, -1, -1)
            x = torch.cat([cls, x], dim=1)
        use_checkpoint = enc.grad_checkpointing and torch.is_grad_enabled()
        for block in enc.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        return enc.norm(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        B = x.shape[0]
        if mask is None:
            mask = self.draw_mask(B, x.device)
        latent = self.forward_encoder(x, mask)  # (B, prefix + N_vis, D)
        y = self.encoder_to_decoder(latent)  # -> (B, prefix + N_vis, Dd)
        Dd, prefix = y.shape[-1], self.encoder.num_prefix_tokens
        pos = self.decoder.pos_embed.to(y.dtype).expand(B, -1, -1)
        patch_pos = pos[:, prefix:]
        visible = y[:, prefix:] + patch_pos[~mask].reshape(B, -1, Dd)
        hidden = self.mask_token.to(y.dtype) + patch_pos[mask].reshape(B, -1, Dd)
        # mask tokens go last, so the decoder's last N_masked outputs are the predictions; the
        # blocks are order-free (position lives in the embedding), so no unshuffle is needed
        y = torch.cat([y[:, :prefix] + pos[:, :prefix], visible, hidden], dim=1)
        use_checkpoint = self.encoder.grad_checkpointing and torch.is_grad_enabled()
        pred = self.decoder(y, num_predicted=hidden.shape[1], use_checkpoint=use_checkpoint)
        return {"pred": pred, "mask": mask}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP2 shards one by one (engine/parallel.py): every encoder and decoder block."""
        return [*self.encoder.fsdp_units(), *self.decoder.blocks]

    def no_weight_decay(self) -> set[str]:
        return {"encoder.pos_embed", "encoder.cls_token", "mask_token"}


MODELS.add("mae", MaskedAutoencoder)  # any size: the debug recipes' tiny models

# VideoMAE (MCG-NJU/VideoMAE, modeling_pretrain.py, `pretrain_videomae_*_patch16_224`):
# q/v bias, fixed 1D sin-cos, 16 frames, tubelet 2, decoder depth 4 (run_mae_pretraining.py's
# default) and decoder width/heads 192/3 (S), 384/6 (B), 512/8 (L); tube mask ratio 0.9.
_VIDEOMAE = dict(qkv_bias="qv", pos_embed="sincos", class_token=False, num_frames=16,
                 tubelet_size=2, decoder_depth=4, mask_type="tube", mask_ratio=0.9)
# MAE (facebookresearch/mae, models_mae.py, `mae_vit_*`): class token, fixed 2D sin-cos,
# decoder 512 wide, 8 deep, 16 heads, `decoder_embed` with bias; random mask ratio 0.75.
_MAE = dict(qkv_bias=True, pos_embed="sincos2d", class_token=True, decoder_embed_dim=512,
            decoder_depth=8, decoder_num_heads=16, decoder_bias=True, mask_ratio=0.75)
_SIZES = {
    "pretrain_videomae_small_patch16_224": dict(_VIDEOMAE, embed_dim=384, depth=12, num_heads=6,
                                                decoder_embed_dim=192, decoder_num_heads=3),
    "pretrain_videomae_base_patch16_224": dict(_VIDEOMAE, embed_dim=768, depth=12, num_heads=12,
                                               decoder_embed_dim=384, decoder_num_heads=6),
    "pretrain_videomae_large_patch16_224": dict(_VIDEOMAE, embed_dim=1024, depth=24, num_heads=16,
                                                decoder_embed_dim=512, decoder_num_heads=8),
    "mae_vit_base_patch16": dict(_MAE, embed_dim=768, depth=12, num_heads=12),
    "mae_vit_large_patch16": dict(_MAE, embed_dim=1024, depth=24, num_heads=16),
    "mae_vit_huge_patch14": dict(_MAE, patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}
for _name, _kwargs in _SIZES.items():
    MODELS.add(_name, functools.partial(MaskedAutoencoder, **_kwargs))
