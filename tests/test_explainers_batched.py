"""The batched engines of the expensive explainers (Integrated Gradients, Occlusion, Score-CAM)
give the maps of the reference implementations (captum; Score-CAM on the network itself), on the
quick setting (ResNet-18 at 128 px, the quick preset's n_steps / window / stride / channels) and on
edge cases; the inference copy they run on computes the same function; chunk sizes change nothing."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

import baselines  # noqa: F401 - registers the methods
from baselines._fast_forward import Im2ColConv2d, cached_inference_copy, inference_copy
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
def test_im2col_conv_equals_conv2d_forward_and_input_gradient(stride, padding, dilation, k):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, k, stride=stride, padding=padding, dilation=dilation, bias=True)
    fast = Im2ColConv2d(conv)
    x = torch.randn(3, 1, 19, 17, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ref, got = conv(x), fast(x2)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    (gr,) = torch.autograd.grad(ref, x, g)
    (gg,) = torch.autograd.grad(got, x2, g)
    torch.testing.assert_close(gg, gr, rtol=1e-5, atol=1e-5)


def test_inference_copy_computes_the_same_logits_and_input_gradients():
    m = _quick("gradcam")
    net = m.ensure_net().eval()
    fast = inference_copy(net)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in fast.modules())  # folded
    assert any(isinstance(mod, Im2ColConv2d) for mod in fast.modules())  # grey stem swapped
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


def test_batched_engines_keep_memory_bounded_by_their_chunk_switch():
    """No forward pass sees more rows than the chunk switch allows."""
    m = _quick("occlusion", perturbations_per_eval=6)
    net = cached_inference_copy(m, m.ensure_net())
    seen: list[int] = []
    handle = net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        occlusion(net, _images(2, 64), [0, 1], window=32, stride=16, rows=6)
        integrated_gradients(net, _images(2, 64), [0, 1], n_steps=4, rows=3)
    finally:
        handle.remove()
    assert seen and max(seen) <= 6
