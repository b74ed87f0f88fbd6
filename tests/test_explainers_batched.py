"""The batched engines of the expensive explainers (Integrated Gradients, Occlusion, Score-CAM)
give the maps of the reference implementations (captum; Score-CAM on the network itself), on the
quick setting (ResNet-18 at 128 px, the quick preset's n_steps / window / stride / channels) and on
edge cases; the inference copy they run on computes the same function (fused convolutions, grey
stem, ReLU after the stem's pool); occlusion by region recompute equals whole forward passes;
chunk sizes change nothing."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

import baselines  # noqa: F401 - registers the methods
from baselines._backbones import GrayscaleNet, create_timm
from baselines import attributions
from baselines._fast_forward import ConvReluMaxPool, FastConv2d, StemSplit, cached_inference_copy, inference_copy
from baselines._regions import RegionOcclusion
from baselines.attributions import gauss_legendre, integrated_gradients, occlusion, occlusion_windows
from wsl_bench.methods import create_method

SIZE = 128  # the quick cohort's image size


def _with_bn_statistics(net: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial batch-norm statistics, so folding them into the convolutions is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def _quick(name: str, **config):
    torch.manual_seed(0)
    m = create_method(name, config, preset="quick")
    m.image_size = SIZE
    _with_bn_statistics(m.ensure_net())
    return m


def _images(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _close(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal to float tolerance relative to the map's scale (maps are min-max normalised later)."""
    assert got.shape == ref.shape
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(got, ref, rtol=rel, atol=rel * scale)


# -- the inference copy --------------------------------------------------------------------------


@pytest.mark.parametrize("stride,padding,dilation,k", [(2, 3, 1, 7), (1, 1, 1, 3), (2, 0, 2, 3), (3, 2, 1, 5)])
def test_grey_stem_conv_equals_conv2d_forward_and_input_gradient(stride, padding, dilation, k):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, k, stride=stride, padding=padding, dilation=dilation, bias=True)
    fast = FastConv2d(conv)  # one input channel: oneDNN forward, matmul + fold input gradient
    x = torch.randn(3, 1, 19, 17, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ref, got = conv(x), fast(x2)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    (gr,) = torch.autograd.grad(ref, x, g)
    (gg,) = torch.autograd.grad(got, x2, g)
    torch.testing.assert_close(gg, gr, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin,cout,size,k,stride,padding,dilation,groups", [
    (8, 16, 12, 3, 1, 1, 1, 1),  # channels-last
    (8, 16, 4, 3, 1, 1, 1, 1),  # 16 output positions: NCHW
    (8, 8, 9, 3, 2, 2, 2, 1),
    (8, 8, 10, 7, 1, 3, 1, 8),  # depthwise
    (6, 12, 7, 1, 2, 0, 1, 1),
])
@pytest.mark.parametrize("add,relu", [(False, False), (False, True), (True, False), (True, True)])
def test_fast_conv_with_fused_add_and_relu_equals_the_separate_operations(cin, cout, size, k, stride, padding,
                                                                          dilation, groups, add, relu):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups)
    fast = FastConv2d(conv, add=add, relu=relu)
    x = torch.randn(3, cin, size, size + 1)
    with torch.no_grad():
        y = conv(x)
    other = torch.randn_like(y) if add else None
    ref = torch.relu(y + other if add else y) if relu else (y + other if add else y)
    with torch.no_grad():  # one oneDNN call with post-ops
        torch.testing.assert_close(fast(x, *([other] if add else [])), ref, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)  # separate differentiable operations
    out = fast(xg, *([other] if add else []))
    torch.testing.assert_close(out.detach(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    (got,) = torch.autograd.grad(out, xg, g)
    xr = x.clone().requires_grad_(True)
    yr = conv(xr)
    yr = yr + other if add else yr
    (want,) = torch.autograd.grad(torch.relu(yr) if relu else yr, xr, g)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_inference_copy_computes_the_same_logits_and_input_gradients():
    m = _quick("gradcam")
    net = m.ensure_net().eval()
    fast = inference_copy(net)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in fast.modules())  # folded
    assert not any(type(mod) is nn.Conv2d for mod in fast.modules())  # every convolution a FastConv2d
    assert any(isinstance(mod, ConvReluMaxPool) and mod.conv.in_channels == 1 for mod in fast.modules())  # stem
    assert sum(isinstance(mod, FastConv2d) and mod.add and mod.relu for mod in fast.modules()) == 8  # residual
    assert all(p.requires_grad for p in net.parameters())  # the original is untouched
    x = _images(3)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(net(xa)[:, 2].sum(), xa)
    (gb,) = torch.autograd.grad(fast(xb)[:, 2].sum(), xb)
    _close(gb, ga)


def test_inference_copy_is_cached_and_rebuilt_when_weights_change():
    m = _quick("occlusion")
    net = m.ensure_net().eval()
    first = cached_inference_copy(m, net)
    assert cached_inference_copy(m, net) is first
    with torch.no_grad():
        net.model.fc.bias.add_(1.0)  # an in-place update bumps the version counter
    second = cached_inference_copy(m, net)
    assert second is not first
    x = _images(1)
    with torch.no_grad():
        torch.testing.assert_close(second(x), net(x), rtol=1e-4, atol=1e-5)


# -- Integrated Gradients --------------------------------------------------------------------------


def test_gauss_legendre_matches_captum():
    from captum.attr._utils.approximation_methods import approximation_parameters

    sizes, alphas = approximation_parameters("gausslegendre")
    for n in (1, 8, 50):
        ours = gauss_legendre(n)
        assert ours == (sizes(n), alphas(n))


def test_integrated_gradients_batched_equals_captum_on_the_quick_setting():
    m = _quick("integrated-gradients")
    assert int(m.config["n_steps"]) == 8 and int(m.config["pool"]) == 4
    x, classes = _images(2), [0, 3, 7]
    net = m.ensure_net().eval()
    fast = cached_inference_copy(m, net)
    raw_new = integrated_gradients(fast, x, classes, n_steps=8, rows=5)  # 5 rows: chunks cut across steps
    for p in net.parameters():
        p.requires_grad_(False)
    raw_ref = m.attribute(net, x, classes)  # captum
    for p in net.parameters():
        p.requires_grad_(True)
    _close(raw_new, raw_ref)
    new = m.explain_batch(x, classes)
    m.config["engine"] = "captum"
    _close(new, m.explain_batch(x, classes))
    assert new.shape == (2, 3, SIZE // 4, SIZE // 4)


def test_integrated_gradients_is_complete_and_chunk_invariant():
    m = _quick("integrated-gradients")
    net = cached_inference_copy(m, m.ensure_net())
    x, classes = _images(2, seed=3), [1, 5]
    a = integrated_gradients(net, x, classes, n_steps=32, rows=64)
    b = integrated_gradients(net, x, classes, n_steps=32, rows=7)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        gap = net(x)[:, classes] - net(torch.zeros_like(x))[:, classes]
    torch.testing.assert_close(a.sum((2, 3)), gap, rtol=2e-2, atol=2e-3)  # completeness (quadrature error)


def test_integrated_gradients_stem_split_equals_input_gradients_through_the_stem(monkeypatch):
    """Stopping the backward passes at the stem's pool and applying the stem's transposed Jacobian
    once per (image, class) gives the same maps; image groups (the accumulator bound) change nothing."""
    m = _quick("integrated-gradients")
    net = cached_inference_copy(m, m.ensure_net())
    split = StemSplit.of(net)
    assert split is not None and len(split.prefix) == 2  # GrayscaleNet's (x - mean) / std
    assert StemSplit.of(m.ensure_net()) is None  # not a traced inference copy
    x, classes = _images(3, seed=9), [0, 4, 7]
    whole = integrated_gradients(net, x, classes, n_steps=8, rows=128, stem_split=False)
    _close(integrated_gradients(net, x, classes, n_steps=8, rows=5), whole, rel=1e-5)
    per_image = 4 * len(classes) * 64 * (SIZE // 2) ** 2
    monkeypatch.setattr(attributions, "STEM_ACCUMULATOR_BYTES", per_image)  # one image per group
    _close(integrated_gradients(net, x, classes, n_steps=8, rows=7), whole, rel=1e-5)
    assert m.config["stem_split"] is True
    on = m.explain_batch(x[:1], classes)
    m.config["stem_split"] = False  # the config switch
    _close(on, m.explain_batch(x[:1], classes), rel=1e-5)


# -- Occlusion --------------------------------------------------------------------------------------


def test_occlusion_batched_equals_captum_on_the_quick_setting():
    m = _quick("occlusion")
    assert (int(m.config["window"]), int(m.config["stride"])) == (32, 16)
    x, classes = _images(2, seed=1), [2, 4, 6]
    net = m.ensure_net().eval()
    raw_new = occlusion(cached_inference_copy(m, net), x, classes, window=32, stride=16, rows=10)
    raw_ref = m.attribute(net, x, classes)  # captum, one sweep for all classes
    _close(raw_new, raw_ref)
    new = m.explain_batch(x, classes)
    m.config["engine"] = "captum"
    _close(new, m.explain_batch(x, classes))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                               nn.Linear(16, 14))

    def forward(self, x):
        return self.f(x)


@pytest.mark.parametrize("window,stride", [(5, 3), (4, 4), (16, 1), (3, 2)])
def test_occlusion_equals_captum_per_class_with_clipped_last_windows(window, stride):
    net = _Tiny().eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    classes = [0, 9]
    got = occlusion(net, x, classes, window=window, stride=stride, rows=3)
    for j, c in enumerate(classes):
        ref = Occlusion(net).attribute(x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
                                       baselines=0.0, target=c)
        torch.testing.assert_close(got[:, j], ref[:, 0], rtol=1e-5, atol=1e-6)


def test_occlusion_windows_cover_the_image_and_clip_at_the_border():
    wins = occlusion_windows((16, 16), 5, 3)  # ceil(11/3)+1 = 5 positions per axis, last clipped
    assert len(wins) == 25
    assert wins[-1] == (12, 16, 12, 16)
    cover = torch.zeros(16, 16)
    for r0, r1, c0, c1 in wins:
        cover[r0:r1, c0:c1] += 1
    assert bool((cover > 0).all())
    with pytest.raises(ValueError, match="exceeds the image"):
        occlusion_windows((8, 8), 9, 1)
    with pytest.raises(ValueError, match="stride"):
        occlusion_windows((16, 16), 4, 5)


def _region_convs(monkeypatch) -> list[tuple[int, int]]:
    """Records (rows, output positions) of every convolution the region engine runs on crops."""
    seen: list[tuple[int, int]] = []
    run = FastConv2d.run

    def recording(self, x, other, padding, relu=None):
        out = run(self, x, other, padding, relu)
        seen.append((int(x.shape[0]), int(out.shape[-2] * out.shape[-1])))
        return out

    monkeypatch.setattr(FastConv2d, "run", recording)
    return seen


def test_region_recompute_occlusion_equals_whole_forward_passes_on_the_quick_setting(monkeypatch):
    m = _quick("occlusion")
    assert m.config["region_recompute"] is True
    net = cached_inference_copy(m, m.ensure_net().eval())
    x, classes = _images(3, seed=5), [0, 3, 6, 9]
    whole = occlusion(net, x, classes, window=32, stride=16, rows=64, region=False)
    seen = _region_convs(monkeypatch)
    for rows in (64, 10):  # 10: chunks that cut windows' runs of images
        _close(occlusion(net, x, classes, window=32, stride=16, rows=rows, region=True), whole, rel=1e-5)
    assert min(p for _, p in seen) < (SIZE // 4) ** 2  # stem / layer1 rectangles, not whole maps
    assert max(r for r, _ in seen) <= 64


def test_region_recompute_logits_equal_each_occluded_image_forward():
    torch.manual_seed(0)
    net = inference_copy(_with_bn_statistics(GrayscaleNet(create_timm("resnet18"))).eval())
    x = _images(2, 96, seed=6)
    wins = occlusion_windows((96, 96), 20, 12)  # last windows clipped at the border
    engine = RegionOcclusion(net)
    env, inner, logits = engine.base_pass(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, net(x), rtol=1e-5, atol=1e-5)
    for k in (0, 3, len(wins) - 1, len(wins) // 2):
        occluded = x.clone()
        r0, r1, c0, c1 = wins[k]
        occluded[:, :, r0:r1, c0:c1] = 0.0
        with torch.no_grad():
            got = engine.logits(env, inner, wins, [(k, 0), (k, 1)])
            torch.testing.assert_close(got, net(occluded), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,kwargs", [("resnet26d", {}), ("resnet50", {}), ("resnet18", {"output_stride": 8})])
def test_region_recompute_is_exact_in_double_precision(arch, kwargs):
    """Deep stem and average-pool shortcuts (resnet26d), bottlenecks (resnet50), dilation (a-trous):
    in float64 the logits of every occluded image equal its whole forward pass to rounding."""
    torch.manual_seed(0)
    net = inference_copy(_with_bn_statistics(GrayscaleNet(create_timm(arch, **kwargs))).eval()).double()
    x = _images(2, 80, seed=7).double()
    wins = occlusion_windows((80, 80), 24, 10)
    engine = RegionOcclusion(net)
    with torch.no_grad():
        env, inner, _ = engine.base_pass(x)
        pairs = [(k, i) for k in range(len(wins)) for i in range(2)]
        for start in range(0, len(pairs), 7):
            chunk = pairs[start:start + 7]
            occluded = x[[i for _, i in chunk]].clone()
            for row, (k, _) in enumerate(chunk):
                r0, r1, c0, c1 = wins[k]
                occluded[row, :, r0:r1, c0:c1] = 0.0
            torch.testing.assert_close(engine.logits(env, inner, wins, chunk), net(occluded), rtol=1e-12, atol=1e-12)


def test_occlusion_switch_region_recompute_off_gives_the_same_maps():
    m = _quick("occlusion")
    x, classes = _images(1, seed=8), [2, 5]
    on = m.explain_batch(x, classes)
    m.config["region_recompute"] = False
    _close(on, m.explain_batch(x, classes), rel=1e-5)


# -- Score-CAM ---------------------------------------------------------------------------------------


def test_scorecam_on_the_inference_copy_equals_the_network_on_the_quick_setting():
    m = _quick("scorecam")
    assert int(m.config["score_cam_channels"]) == 32 and int(m.config["explain_output_stride"]) == 16
    x, classes = _images(2, seed=4), [0, 1, 5, 7]
    new = m.explain_batch(x, classes)  # a-trous net, masked images scored on its inference copy
    m.config["score_cam_fast"] = False
    ref = m.explain_batch(x, classes)  # scored on the network itself
    assert new.shape == (2, 4, SIZE // 16, SIZE // 16)
    _close(new, ref)
    m.config["score_cam_batch"] = 7  # chunking does not matter
    _close(m.explain_batch(x, classes), ref)


# -- switches and failures ------------------------------------------------------------------------


def test_unknown_engine_is_an_error_naming_the_key():
    m = _quick("integrated-gradients", engine="fastest")
    with pytest.raises(ValueError, match="engine"):
        m.explain_batch(_images(1, 32), [0])


def test_batched_engines_keep_memory_bounded_by_their_chunk_switch(monkeypatch):
    """No forward pass (nor any convolution of the region engine) sees more rows than the chunk
    switch allows."""
    m = _quick("occlusion", perturbations_per_eval=6)
    net = cached_inference_copy(m, m.ensure_net())
    seen: list[int] = []
    handle = net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    convs = _region_convs(monkeypatch)
    try:
        occlusion(net, _images(2, 64), [0, 1], window=32, stride=16, rows=6, region=False)
        occlusion(net, _images(2, 64), [0, 1], window=16, stride=8, rows=6, region=True)
        integrated_gradients(net, _images(2, 64), [0, 1], n_steps=4, rows=3)
    finally:
        handle.remove()
    assert seen and max(seen) <= 6
    assert convs and max(r for r, _ in convs if r != 2) <= 6  # (2 rows: the unoccluded pass)
