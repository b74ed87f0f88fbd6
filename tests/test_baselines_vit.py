"""Known answers for the ViT explanations: captured attention equals the hand-computed softmax,
rollout equals the hand-computed product of (attention + identity), gradient rollout and
Grad-CAM on tokens equal per-class hand computations, with register tokens and a non-square grid."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from baselines._backbones import GrayscaleNet
from baselines.vit import (
    ViTExplainer,
    attention_maps,
    cls_to_patches,
    discard_lowest,
    fuse_heads,
    gradient_rollout,
    rollout,
    token_grid,
)


def toy_vit(reg_tokens: int = 0, depth: int = 2, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=(16, 32), patch_size=8, in_chans=1, num_classes=14, embed_dim=8, depth=depth,
                             num_heads=2, reg_tokens=reg_tokens, dynamic_img_size=True).eval()


def method_on(model: VisionTransformer, **config) -> ViTExplainer:
    m = ViTExplainer({"normalize": "none", **config})
    m.image_size = 16
    m.net = GrayscaleNet(model, mean=0.0, std=1.0).eval()
    return m


def hand_attentions(model: VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """softmax(q k^T / sqrt(d)) of every block, from the block inputs and its qkv weights."""
    inputs = []
    hooks = [blk.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for blk in model.blocks]
    model(x)
    for h in hooks:
        h.remove()
    out = []
    for blk, xin in zip(model.blocks, inputs):
        b, n, c = xin.shape
        qkv = blk.attn.qkv(blk.norm1(xin)).reshape(b, n, 3, blk.attn.num_heads, c // blk.attn.num_heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        out.append(torch.softmax(q @ k.transpose(-2, -1) * blk.attn.scale, dim=-1))
    return out


def test_token_grid_any_size_and_errors():
    assert token_grid(64, 128, 128) == (8, 8)
    assert token_grid(8, 16, 32) == (2, 4)
    assert token_grid(1024, 512, 512) == (32, 32)
    assert token_grid(12, 48, 64) == (3, 4)
    with pytest.raises(ValueError, match="grid"):
        token_grid(7, 16, 16)


def test_captured_attention_is_the_softmax_and_fused_path_is_restored():
    model = toy_vit(reg_tokens=2)
    x = torch.rand(3, 1, 16, 32)
    fused = [blk.attn.fused_attn for blk in model.blocks]
    with torch.no_grad():
        ref_out = model(x)
        with attention_maps(model) as store:
            out = model(x)
        hand = hand_attentions(model, x)
    assert [blk.attn.fused_attn for blk in model.blocks] == fused
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)  # explicit path = same function
    assert len(store) == 2 and store[0].shape == (3, 2, 3 + 8, 3 + 8)
    for got, want in zip(store, hand):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_rollout_equals_hand_computed_product_of_attention_plus_identity():
    """Known answer on a 2-layer toy ViT (2 register tokens, 2x4 grid): R = Â2 Â1 with
    Â = (mean_heads(A) + I) / row sums; the map is R's class-token row over the patch tokens."""
    model = toy_vit(reg_tokens=2)
    x = torch.rand(2, 1, 16, 32)
    with torch.no_grad():
        a1, a2 = hand_attentions(model, x)
    eye = torch.eye(a1.shape[-1])
    hat = []
    for a in (a1, a2):
        m = a.mean(1) + eye
        hat.append(m / m.sum(-1, keepdim=True))
    want = (hat[1] @ hat[0])[:, 0, 3:].reshape(2, 2, 4)
    got = method_on(model, explainer="rollout").explain(x, [0, 4, 7])
    assert got.shape == (2, 3, 2, 4)
    for j in range(3):  # class-agnostic
        torch.testing.assert_close(got[:, j], want, rtol=1e-5, atol=1e-6)
    # pure function path too
    torch.testing.assert_close(cls_to_patches(rollout([a1, a2]), 3, 16, 32), want, rtol=1e-5, atol=1e-6)


def test_head_fusion_and_discard():
    a = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(fuse_heads(a, "max"), a.amax(1))
    torch.testing.assert_close(fuse_heads(a, "min"), a.amin(1))
    with pytest.raises(ValueError, match="head_fusion"):
        fuse_heads(a, "median")
    fused = fuse_heads(a, "mean")
    d = discard_lowest(fused, 0.5)
    k = int(25 * 0.5)
    for b in range(2):
        zeroed = (d[b] == 0) & (fused[b] != 0)
        assert int(zeroed.sum()) in (k, k - 1)  # k lowest, minus the protected (0,0) entry
        assert d[b, 0, 0] == fused[b, 0, 0]
        rest = d[b].flatten()[1:]
        kept = rest[rest > 0]
        assert kept.min() >= fused[b][zeroed].max()
    r = rollout([torch.rand(1, 2, 4, 4).softmax(-1)] * 2, head_fusion="max", discard_ratio=0.25)
    torch.testing.assert_close(r.sum(-1), torch.ones(1, 4))  # rows stay stochastic


def test_gradient_rollout_equals_per_class_hand_computation():
    model = toy_vit(reg_tokens=1, seed=3)
    x = torch.rand(2, 1, 16, 32)
    classes = [1, 6]
    got = method_on(model, explainer="grad-rollout", grad_rollout_rule="chefer").explain(x, classes)
    for j, c in enumerate(classes):
        with attention_maps(model, keep_graph=True) as store:
            logits = model(x.clone().requires_grad_(True))
        grads = torch.autograd.grad(logits[:, c].sum(), list(store))
        r = torch.eye(store[0].shape[-1]).expand(2, -1, -1)
        for a, g in zip(store, grads):
            r = r + (g * a).clamp_min(0).mean(1) @ r
        want = torch.relu(r[:, 0, 2:].reshape(2, 2, 4))
        torch.testing.assert_close(got[:, j], want.detach(), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got[:, 0], got[:, 1])  # class-specific
    # the other rule and a bad rule
    attns = [torch.rand(2, 2, 4, 4).softmax(-1)] * 2
    assert gradient_rollout(attns, [torch.randn(2, 2, 4, 4)] * 2, rule="gildenblat").shape == (2, 4, 4)
    with pytest.raises(ValueError, match="grad_rollout_rule"):
        gradient_rollout(attns, attns, rule="nope")


def test_last_layer_attention_is_class_token_row():
    model = toy_vit(reg_tokens=0)
    x = torch.rand(2, 1, 16, 32)
    with torch.no_grad():
        a2 = hand_attentions(model, x)[-1]
    got = method_on(model, explainer="attention", head_fusion="max").explain(x, [2])
    torch.testing.assert_close(got[:, 0], a2.amax(1)[:, 0, 1:].reshape(2, 2, 4), rtol=1e-5, atol=1e-6)


def test_vit_gradcam_on_patch_tokens_skips_prefix_tokens():
    model = toy_vit(reg_tokens=3, seed=5)  # 4 prefix tokens
    x = torch.rand(3, 1, 16, 32)
    classes = [0, 9]
    got = method_on(model, explainer="gradcam").explain(x, classes)
    assert got.shape == (3, 2, 2, 4)
    store = {}
    h = model.blocks[-1].norm1.register_forward_hook(lambda _m, _i, o: store.__setitem__("t", o))
    logits = model(x)
    h.remove()
    tokens = store["t"]
    for j, c in enumerate(classes):
        (g,) = torch.autograd.grad(logits[:, c].sum(), tokens, retain_graph=True)
        w = g[:, 4:].mean(1)  # GAP of the gradients over patch tokens only
        cam = torch.relu(torch.einsum("bd,bnd->bn", w, tokens[:, 4:])).reshape(3, 2, 4)
        torch.testing.assert_close(got[:, j], cam.detach(), rtol=1e-4, atol=1e-6)


def test_unknown_explainer_is_a_clear_error():
    m = method_on(toy_vit(), explainer="lrp")
    with pytest.raises(ValueError, match="explainer"):
        m.explain(torch.rand(1, 1, 16, 32), [0])
