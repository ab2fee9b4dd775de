import pytest
import torch

from tubelet.models import VisionTransformer, create_model
from tubelet.models.layers import sincos_1d
from tubelet.registry import MODELS, ConfigError, check_kwargs

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
# VideoMAE's finetune layout: tubelets, no class token, mean pooling + fc_norm, fixed sin-cos, q/v bias
VIDEOMAE = dict(num_frames=16, tubelet_size=2, global_pool="avg", class_token=False, pos_embed="sincos",
                qkv_bias="qv")


def assert_allclose(actual: torch.Tensor, expected: torch.Tensor, *, tol: float = 1e-5,
                    msg: str = "") -> None:
    # not torch.testing.assert_close: its first call imports torch.distributed.tensor (~1.5 s)
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual, expected, rtol=tol, atol=tol), f"{msg} max abs diff {diff:.3g}"


def tiny(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**{**TINY, **kwargs})


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_image_shapes():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 1 + 16, 32)
    assert model(x).shape == (2, 5)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 32)
    assert model.num_features == model.embed_dim == 32 and model.num_classes == 5


def test_video_shapes():
    model = tiny(num_frames=4, tubelet_size=2, global_pool="avg", class_token=False).eval()
    x = torch.randn(2, 3, 4, 32, 32)  # (B,C,T,H,W)
    assert model.forward_features(x).shape == (2, 2 * 4 * 4, 32)
    assert model(x).shape == (2, 5)
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(2, 3, 32, 32))


def test_num_classes_zero_gives_features():
    model = tiny(num_classes=0).eval()
    assert isinstance(model.head, torch.nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)


@pytest.mark.parametrize("name, expected", [
    ("vit_tiny_patch16_224", 5_717_416),
    ("vit_small_patch16_224", 22_050_664),
    ("vit_base_patch16_224", 86_567_656),
    ("vit_large_patch16_224", 304_326_632),
    ("vit_huge_patch14_224", 632_045_800),
])
def test_param_count_matches_timm(name, expected):
    with torch.device("meta"):
        assert num_params(create_model(name)) == expected


@pytest.mark.parametrize("name, num_classes, expected", [
    ("vit_small_patch16_224", 400, 22_033_936),
    ("vit_base_patch16_224", 400, 86_534_800),
    ("vit_large_patch16_224", 400, 304_270_736),
    ("vit_base_patch16_224", 51, 86_266_419),
    ("vit_base_patch16_224", 174, 86_361_006),
])
def test_param_count_matches_videomae_finetune(name, num_classes, expected):
    with torch.device("meta"):
        assert num_params(create_model(name, num_classes=num_classes, **VIDEOMAE)) == expected


def test_state_dict_keys_follow_timm():
    keys = set(tiny(depth=1).state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "blocks.0.attn.qkv.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"} <= keys
    assert not any(k.startswith("fc_norm") for k in keys)


def test_videomae_layout_keys_and_fixed_pos_embed():
    model = tiny(depth=1, **{**VIDEOMAE, "num_frames": 4})
    keys = set(model.state_dict())
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "fc_norm.weight", "fc_norm.bias"} <= keys
    # like VideoMAE's checkpoints: no table, no class token, no final norm before pooling
    assert not keys & {"pos_embed", "cls_token", "norm.weight", "blocks.0.attn.qkv.bias"}
    assert "pos_embed" not in dict(model.named_parameters())
    assert_allclose(model.pos_embed[0], sincos_1d(2 * 4 * 4, 32))


def test_meta_build_then_init_weights_restores_everything_but_the_draws():
    reference = tiny(**VIDEOMAE)
    with torch.device("meta"):
        model = VisionTransformer(**{**TINY, **VIDEOMAE})
    model.to_empty(device="cpu")
    model.init_weights()
    assert_allclose(model.pos_embed, reference.pos_embed)
    assert_allclose(model.fc_norm.weight, torch.ones(32))


def test_init_is_deterministic_and_timm_like():
    a, b = tiny(), tiny()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(a.blocks[0].attn.qkv.bias, torch.zeros(96))
    assert torch.equal(a.norm.weight, torch.ones(32))
    assert 0.015 < a.blocks[0].mlp.fc1.weight.std().item() < 0.025
    assert a.cls_token.abs().max().item() < 1e-4
    scaled = tiny(head_init_scale=0.001)
    assert_allclose(scaled.head.weight, a.head.weight * 0.001)


def test_forward_is_deterministic_under_a_seed():
    model = tiny(drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(1)
    assert torch.equal(first, model(x))


def test_grad_checkpointing_gives_same_grads():
    model = tiny(drop_rate=0.1, drop_path_rate=0.3).train()
    x = torch.randn(4, 3, 32, 32)

    def grads():
        model.zero_grad()
        torch.manual_seed(2)
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    for name in plain:
        assert_allclose(checkpointed[name], plain[name], msg=name)


def test_layer_ids_for_layer_wise_lr_decay():
    model = tiny(depth=3)
    assert model.num_layers == 5
    ids = {name: model.get_layer_id(name) for name, _ in model.named_parameters()}
    assert ids["cls_token"] == ids["pos_embed"] == ids["patch_embed.proj.weight"] == 0
    assert ids["blocks.0.norm1.weight"] == 1 and ids["blocks.2.mlp.fc2.bias"] == 3
    assert ids["norm.weight"] == ids["head.weight"] == ids["head.bias"] == 4
    with pytest.raises(ValueError, match="not a parameter"):
        model.get_layer_id("module.blocks.0.norm1.weight")


def test_no_weight_decay():
    assert tiny().no_weight_decay() == {"pos_embed", "cls_token"}


def test_pooling_options_are_checked():
    with pytest.raises(ValueError, match="class_token"):
        tiny(class_token=False)
    with pytest.raises(ValueError, match="global_pool"):
        tiny(global_pool="max")
    with pytest.raises(ValueError, match="pos_embed"):
        tiny(pos_embed="rope")
    avg = tiny(global_pool="avg")  # timm: with avg pooling the final norm moves after the pool
    assert isinstance(avg.norm, torch.nn.Identity) and isinstance(avg.fc_norm, torch.nn.LayerNorm)
    no_fc_norm = tiny(global_pool="avg", fc_norm=False)
    assert isinstance(no_fc_norm.norm, torch.nn.LayerNorm) and isinstance(no_fc_norm.fc_norm, torch.nn.Identity)


def test_reset_classifier():
    model = tiny()
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    model.reset_classifier(0)
    assert isinstance(model.head, torch.nn.Identity)


def test_autocast_keeps_activations_in_bf16():
    model = tiny(pos_embed="sincos").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.forward_features(torch.randn(1, 3, 32, 32)).dtype == torch.bfloat16


def test_registry_entries_expose_keyword_arguments():
    assert {"vit", "vit_tiny_patch16_224", "vit_huge_patch14_224"} <= set(MODELS.names())
    entry = MODELS.get("vit_small_patch16_224")
    check_kwargs(entry, ["num_classes", "num_frames", "tubelet_size", "qkv_bias"], key="model")
    with pytest.raises(ConfigError, match="did you mean 'num_classes'"):
        check_kwargs(entry, ["num_class"], key="model")
    with pytest.raises(ConfigError, match="did you mean 'vit_small_patch16_224'"):
        create_model("vit_smal_patch16_224")
    assert create_model("vit", **TINY).embed_dim == 32
