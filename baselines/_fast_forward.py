"""Inference copies of a CNN for the explainers that run it many times per image (Integrated
Gradients, Occlusion, Score-CAM), and the chunked loops that drive them.

`inference_copy(net)` returns the same function, computed faster on a CPU:

- batch norms folded into the preceding convolutions (eval mode; `torch.fx` conv-bn fusion; a
  model that does not trace keeps its batch norms),
- channels-last memory layout (oneDNN's faster convolution path),
- a first convolution with one input channel (the grey stem) computed as unfold + matmul, with
  a matching custom backward for the input gradient: oneDNN handles a 1-channel 7x7 conv and
  especially its backward poorly (≈ 8 ms per 128-px image per backward on one core),
- non-inplace activations (in-place ReLU forces autograd copies in the backward),
- frozen parameters (only input gradients are ever needed).

The outputs equal the original net's to float rounding (≈ 1e-7 on ResNet logits; the tests assert
this). The copy is made once per (method, network, weights): `cached_inference_copy` keys it on
the network's identity and its parameters' version counters, so in-place weight updates rebuild it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _Im2ColConvFn(torch.autograd.Function):
    """conv2d for a few input channels as unfold + matmul; returns [N, L, Cout] (channels last)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, out_hw):
        k = weight.shape[-2:]
        cols = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)  # [N, Cin*k*k, L]
        wm = weight.reshape(weight.shape[0], -1)
        out = torch.matmul(cols.transpose(1, 2), wm.t())  # [N, L, Cout]
        if bias is not None:
            out = out + bias
        ctx.save_for_backward(weight)
        ctx.conf = (tuple(x.shape[-2:]), k, stride, padding, dilation)
        return out

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        in_hw, k, stride, padding, dilation = ctx.conf
        cols = torch.matmul(grad, weight.reshape(weight.shape[0], -1)).transpose(1, 2)  # [N, Cin*k*k, L]
        gx = F.fold(cols, in_hw, k, dilation=dilation, padding=padding, stride=stride)
        return gx, None, None, None, None, None, None


class Im2ColConv2d(nn.Module):
    """A frozen Conv2d (groups 1, zero padding) computed as unfold + matmul, input gradient included."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation = tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kh, kw = self.weight.shape[-2:]
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        out = _Im2ColConvFn.apply(x.contiguous(), self.weight, self.bias, self.stride, self.padding,
                                  self.dilation, (ho, wo))
        return out.view(n, ho, wo, -1).permute(0, 3, 1, 2)  # NCHW view, channels-last memory


def _fold_batch_norms(net: nn.Module) -> nn.Module:
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(net, inplace=True)
    except Exception:  # a model fx cannot trace keeps its batch norms (same maths, slower)
        return net


def _swap_grey_stem(net: nn.Module) -> None:
    for name, mod in list(net.named_modules()):
        if (isinstance(mod, nn.Conv2d) and type(mod) is nn.Conv2d and mod.in_channels == 1 and mod.groups == 1
                and mod.padding_mode == "zeros" and not isinstance(mod.padding, str)):
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, Im2ColConv2d(mod))


def inference_copy(net: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
                   im2col_stem: bool | None = None) -> nn.Module:
    """A frozen, eval-mode copy of `net` computing the same function faster (see the module doc).

    `im2col_stem` defaults to True on CPU (on GPUs cuDNN's own stem is fine)."""
    fast = copy.deepcopy(net).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fast = _fold_batch_norms(fast)
    device = next(fast.parameters()).device
    if im2col_stem if im2col_stem is not None else device.type == "cpu":
        _swap_grey_stem(fast)
    for mod in fast.modules():
        if getattr(mod, "inplace", None) is True:
            mod.inplace = False
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast.eval()


def _weights_version(net: nn.Module) -> tuple[Any, ...]:
    return tuple(t._version for t in net.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor))


def cached_inference_copy(owner: Any, net: nn.Module, **kwargs: Any) -> nn.Module:
    """`inference_copy(net)` built once per `owner` (a method) for this network and these weights."""
    key = (id(net), _weights_version(net), tuple(sorted(kwargs.items())))
    cached = getattr(owner, "_inference_copy", None)
    if cached is None or cached[0] is not net or cached[1] != key:
        cached = (net, key, inference_copy(net, **kwargs))
        owner._inference_copy = cached
    return cached[2]

