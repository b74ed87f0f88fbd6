"""CLARiTy's network and method on a tiny backbone: shapes, one-pass maps, switches, persistence."""

from __future__ import annotations

import json

import pytest
import torch

from clarity.config import ClarityConfig
from clarity.dino import load_dino_file
from clarity.method import CONFIG
from clarity.model import ClarityNet, class_row_attention
from wsl_bench.methods import create_method, get_method_info, resolve_config

TINY = {"arch": "t16-64-d3", "segcam_hidden": 16, "explain_batch_size": 8}


def tiny_net(**over) -> ClarityNet:
    torch.manual_seed(0)
    return ClarityNet(ClarityConfig.from_dict({**TINY, **over})).eval()


def images(b=3, size=64, seed=0):
    return torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_maps_are_distributions():
    out = tiny_net()(images())
    assert out["logits"].shape == (3, 14) and out["cls_logits"].shape == (3, 14)
    assert out["class_maps"].shape == (3, 14, 4, 4)
    torch.testing.assert_close(out["class_maps"].sum((-2, -1)), torch.ones(3, 14))
    assert (out["class_maps"] >= 0).all()
    assert out["seg_maps"].shape == (3, 14, 4, 4) and out["fg_logits"].shape == (3, 1, 4, 4)
    assert out["seg_logits"].shape == (3, 14) and out["class_tokens"].shape == (3, 14, 192)


def test_class_row_attention_matches_timm_block():
    """The explicit class rows reproduce timm's attention output for those tokens."""
    net = tiny_net()
    blk = net.vit.blocks[-1]
    x = torch.randn(2, 14 + 16, 192)
    h = blk.norm1(x)
    out, rows = class_row_attention(blk.attn, h, 14)
    torch.testing.assert_close(out, blk.attn(h), atol=1e-5, rtol=1e-5)  # same as timm's fused attention
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, blk.attn.num_heads, 14))
    attn = blk.attn
    v = attn.qkv(h).reshape(2, 30, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)[2]
    cls_out = (rows @ v).transpose(1, 2).reshape(2, 14, -1)
    torch.testing.assert_close(attn.proj(cls_out), out[:, :14], atol=1e-5, rtol=1e-5)


def test_all_14_maps_come_from_one_forward_pass():
    method = create_method("clarity", config=TINY)
    calls = []
    method.ensure_net().vit.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    maps = method.explain(images(5), list(range(14)))
    assert maps.shape == (5, 14, 4, 4)
    assert len(calls) == 1  # one batch of 5 (explain_batch_size 8): one forward for all classes
    # each class map is the same as asking for that class alone
    only = method.explain(images(5), [9])
    torch.testing.assert_close(only[:, 0], maps[:, 9])
    with pytest.raises(ValueError, match="outside"):
        method.explain(images(1), [14])


def test_explain_is_batch_independent_and_predict_in_unit_range():
    method = create_method("clarity", config={**TINY, "explain_batch_size": 2})
    x = images(5)
    full = method.explain(x, [0, 3])
    torch.testing.assert_close(method.explain(x[3:4], [0, 3]), full[3:4], atol=1e-5, rtol=1e-4)
    p = method.predict(x)
    assert p.shape == (5, 14) and ((p > 0) & (p < 1)).all()
    assert torch.isfinite(full).all() and full.min() >= 0 and full.max() <= 1 + 1e-6


def test_switches_change_the_network():
    x = images(2)
    no_seg = tiny_net(segmentcam=False)
    assert no_seg.segmentcam is None and "seg_maps" not in no_seg(x)
    token = tiny_net(distill="token")
    out = token(x)
    assert out["dist_logits"].shape == (2, 14)
    torch.testing.assert_close(out["logits"], (out["cls_logits"] + out["dist_logits"]) / 2)
    # attention pooling: the score is w_c . sum_p a_cp x_p; without it, w_c . token_c
    a, b = tiny_net(attn_pool=True), tiny_net(attn_pool=False)
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(x)["cls_logits"], b(x)["cls_logits"])
    out = b(x)
    torch.testing.assert_close(out["cls_logits"], (out["class_tokens"] * b.cls_weight).sum(-1) + b.cls_bias)
    # K = 1 with "last" equals K = 3 with "last" (both the final block's attention)
    k1, k3 = tiny_net(map_blocks=1), tiny_net(map_blocks=3, block_agg="last")
    k3.load_state_dict(k1.state_dict())
    torch.testing.assert_close(k1(x)["class_maps"], k3(x)["class_maps"])
    with pytest.raises(ValueError, match="exceeds the backbone depth"):
        tiny_net(map_blocks=4)


def test_other_input_sizes_are_resized_to_the_model():
    net = tiny_net()
    out = net(images(2, size=96))
    assert out["class_maps"].shape == (2, 14, 4, 4)
    with pytest.raises(ValueError, match="grayscale"):
        net(torch.rand(2, 3, 64, 64))


def test_input_size_sets_the_grid_the_vit_sees():
    """input_size upsamples the images inside the model: 64-px images on a 96-px ViT give 6x6 maps."""
    net = tiny_net(input_size=96)
    assert net.vit.pos_embed.shape[1] == 36
    out = net(images(2, size=64))
    assert out["class_maps"].shape == (2, 14, 6, 6) and out["seg_maps"].shape == (2, 14, 6, 6)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        ClarityConfig.from_dict({**TINY, "input_size": 100})


def test_conv_stem_keeps_the_token_grid_and_is_its_own_network(tmp_path):
    """patch_stem='conv': four stride-2 convs replace the 16x16 patchify; same grid, maps and round trip."""
    net = tiny_net(patch_stem="conv")
    stem = net.vit.patch_embed.proj
    strides = [m.stride[0] for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 2, 1] and stem[-1].out_channels == net.vit.embed_dim
    out = net(images(2))
    assert out["class_maps"].shape == (2, 14, 4, 4)
    assert torch.allclose(out["class_maps"].sum((-2, -1)), torch.ones(2, 14), atol=1e-5)
    method = create_method("clarity", {**TINY, "patch_stem": "conv"})
    method.net = net
    method.save(tmp_path)
    again = create_method("clarity", dict(TINY))  # the saved config, not the caller's, shapes the network
    again.load(tmp_path)
    x = images(2)
    assert torch.allclose(again.explain(x, range(8)), method.explain(x, range(8)), atol=1e-6)
    with pytest.raises(ValueError, match="patch_stem"):
        ClarityConfig.from_dict({**TINY, "patch_stem": "resnet"})


def test_load_backbone_interpolates_positions_and_adapts_rgb(tmp_path):
    """A 224-px DINO-style file (cls position, RGB patch embedding) loads into the 64-px model."""
    import timm

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=3)
    state = {f"module.backbone.{k}": v for k, v in src.state_dict().items()}
    state["module.head.last_layer.weight"] = torch.zeros(3, 3)
    torch.save({"teacher": state}, tmp_path / "dino.pth")
    net = tiny_net()
    net.load_backbone(load_dino_file(tmp_path / "dino.pth"), "dino.pth")
    torch.testing.assert_close(net.vit.blocks[1].mlp.fc1.weight, src.blocks[1].mlp.fc1.weight)
    torch.testing.assert_close(net.vit.patch_embed.proj.weight, src.patch_embed.proj.weight.sum(1, keepdim=True))
    assert net.vit.pos_embed.shape == (1, 16, 192)
    with pytest.raises(ValueError, match="does not hold weights"):
        net.load_backbone({"foo": torch.zeros(1)}, "junk")
    with pytest.raises(FileNotFoundError, match="DINO weights file"):
        load_dino_file(tmp_path / "missing.pth")


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown config key"):
        ClarityConfig.from_dict({"orth_wieght": 1.0})
    with pytest.raises(ValueError, match="fusion"):
        ClarityConfig.from_dict({"fusion": "sum"})
    with pytest.raises(ValueError, match="dino_path"):
        ClarityConfig.from_dict({"dino": "file"})
    with pytest.raises(ValueError, match="arch"):
        ClarityConfig.from_dict({"arch": "b16-384"})
    with pytest.raises(ValueError, match="fg_floor"):
        ClarityConfig.from_dict({"fg_floor": 1.0})
    with pytest.raises(ValueError, match="lr_schedule"):
        ClarityConfig.from_dict({"lr_schedule": "step"})


def test_registry_presets_and_ablations():
    info = get_method_info("clarity")
    assert set(info.cls.presets) == {"quick", "standard", "paper"}
    assert {"segmentcam", "dino", "orth", "attnpool"} <= set(info.cls.ablations)
    assert ClarityConfig.from_dict(resolve_config("clarity", "quick")).resolved_arch == "t16-128"
    assert ClarityConfig.from_dict(resolve_config("clarity", "paper")).resolved_arch == "s16-512"
    # the named configurations keep their backbone under any preset
    for name, arch in (("clarity-s16-224", "s16-224"), ("clarity-s16-512", "s16-512")):
        for preset in ("quick", "paper"):
            assert ClarityConfig.from_dict(resolve_config(name, preset)).resolved_arch == arch
    # every ablation is a valid config that removes its component
    for comp, over in info.cls.ablations.items():
        cfg = ClarityConfig.from_dict({**resolve_config("clarity", "quick"), **over})
        removed = {"segmentcam": not cfg.segmentcam, "dino": cfg.dino == "none", "orth": cfg.orth_weight == 0,
                   "attnpool": not cfg.attn_pool, "distill": cfg.distill == "none"}[comp]
        assert removed, comp


def test_save_load_round_trip(tmp_path):
    method = create_method("clarity", config={**TINY, "fusion": "mean"})
    x = images(2)
    maps, probs = method.explain(x, [1, 4]), method.predict(x)
    method.save(tmp_path)
    saved = json.loads((tmp_path / CONFIG).read_text())
    assert saved["config"]["fusion"] == "mean"
    other = create_method("clarity", config=TINY)  # a different fusion: the saved config wins
    other.load(tmp_path)
    torch.testing.assert_close(other.explain(x, [1, 4]), maps)
    torch.testing.assert_close(other.predict(x), probs)
    with pytest.raises(FileNotFoundError, match="fit the method first"):
        other.load(tmp_path / "empty")
