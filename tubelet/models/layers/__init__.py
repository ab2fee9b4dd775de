"""Building blocks of the ViTs: patch/tubelet embedding, position tables, attention, MLP, block."""
from tubelet.models.layers.attention import Attention
from tubelet.models.layers.block import Block, LayerScale
from tubelet.models.layers.drop_path import DropPath, drop_path
from tubelet.models.layers.mlp import Mlp
from tubelet.models.layers.patch_embed import PatchEmbed
from tubelet.models.layers.pos_embed import resize_pos_embed, sincos_1d, sincos_2d, sincos_3d

__all__ = ["Attention", "Block", "DropPath", "LayerScale", "Mlp", "PatchEmbed", "drop_path",
           "resize_pos_embed", "sincos_1d", "sincos_2d", "sincos_3d"]
