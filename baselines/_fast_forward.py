"""Inference copies of a CNN for the explainers that run it many times per image (Integrated
Gradients, Occlusion, Score-CAM).

`inference_copy(net)` returns the same function, computed faster on a CPU:

- batch norms folded into the preceding convolutions (eval mode; `torch.fx` conv-bn fusion; a
  model that does not trace keeps its batch norms and plain convolutions),
- every convolution replaced by a `FastConv2d` that also absorbs a following residual add and
  ReLU (an fx pass over the traced graph). Without autograd (Occlusion, Score-CAM) it runs as one
  oneDNN call with the add and the ReLU as post-ops (`torch.ops.mkldnn._convolution_pointwise`),
  which saves the separate memory passes of the add and the activation. With autograd (IG) it
  runs the same three steps as separate differentiable operations,
- a per-convolution memory layout: channels-last, except for outputs of at most
  `NCHW_MAX_POSITIONS` positions (ResNet-18's last stage at 128 px, 4x4), where oneDNN's plain
  NCHW kernels are ≈ 1.5x faster on this kind of CPU, forward and backward,
- a first convolution with one input channel (the grey stem) with oneDNN's forward and a matmul +
  fold input-gradient backward: oneDNN's backward for a 1-channel 7x7 conv is slow (≈ 8 ms per
  128-px image on one core),
- the stem's conv + ReLU + max pool as one `ConvReluMaxPool`, whose ReLU runs after the pool
  under autograd (exactly the same values and gradients, a quarter of the data),
- non-inplace activations (in-place ReLU forces autograd copies in the backward),
- frozen parameters (only input gradients are ever needed).

`StemSplit` cuts such a copy after its stem, for IG's backward passes that stop there
(`baselines.attributions.integrated_gradients`).

The outputs equal the original net's to float rounding (≈ 1e-7 on ResNet logits; the tests assert
this). The copy is made once per (method, network, weights): `cached_inference_copy` keys it on
the network's identity and its parameters' version counters, so in-place weight updates rebuild it.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Convolution outputs with at most this many positions run in NCHW on a CPU, larger ones in
# channels-last (measured on ResNet-18 at 128 px: 4x4 outputs 1.5x faster in NCHW, 32x32 ones
# 1.6x faster in channels-last, 8x8 ones equal).
NCHW_MAX_POSITIONS = 16


def _fused_ops_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class _GreyStemFn(torch.autograd.Function):
    """conv2d with one input channel: oneDNN forward, matmul + fold input-gradient backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(weight)
        ctx.conf = (tuple(x.shape[-2:]), tuple(weight.shape[-2:]), stride, padding, dilation)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        in_hw, k, stride, padding, dilation = ctx.conf
        n, cout = grad.shape[:2]
        # [Cin*k*k, Cout] @ [N, Cout, L] -> [N, Cin*k*k, L], the layout fold reads (a channels-last
        # grad enters the matmul as a transposed view, without a copy)
        cols = torch.matmul(weight.reshape(cout, -1).t(), grad.reshape(n, cout, -1))
        gx = F.fold(cols, in_hw, k, dilation=dilation, padding=padding, stride=stride)
        return gx, None, None, None, None, None


class FastConv2d(nn.Module):
    """A frozen Conv2d (batch norm folded in), optionally followed by a residual add and a ReLU.

    `forward(x)` or, with `add`, `forward(x, other)` computes relu?(conv(x) [+ other]). `run` is the
    same with another padding (the region engine of `baselines._regions` calls it with 0 on crops)
    and, optionally, without the ReLU.
    """

    def __init__(self, conv: nn.Conv2d, *, add: bool = False, relu: bool = False):
        super().__init__()
        w = conv.weight.detach()
        # empty_like + copy: `contiguous(memory_format=...)` keeps the NCHW strides of a 1-input-channel
        # weight (it already counts as channels-last), and oneDNN then picks an NCHW output
        self.register_buffer("weight", torch.empty_like(w, memory_format=torch.channels_last).copy_(w))
        self.register_buffer("weight_nchw", w.contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().contiguous())
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride, self.padding, self.dilation = tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation)
        self.groups = conv.groups
        self.add, self.relu = bool(add), bool(relu)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, add={self.add}, "
                f"relu={self.relu}")

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(x, other, self.padding)

    def out_size(self, hw: tuple[int, int], padding: tuple[int, int]) -> tuple[int, int]:
        return tuple(
            (hw[i] + 2 * padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1) // self.stride[i] + 1
            for i in range(2)
        )

    def run(self, x: torch.Tensor, other: torch.Tensor | None, padding: tuple[int, int],
            relu: bool | None = None) -> torch.Tensor:
        relu = self.relu if relu is None else relu
        if self.add != (other is not None):
            raise TypeError(f"FastConv2d(add={self.add}) called {'without' if self.add else 'with'} a residual input")
        cpu = x.device.type == "cpu"
        ho, wo = self.out_size(tuple(x.shape[-2:]), padding)
        nchw = cpu and ho * wo <= NCHW_MAX_POSITIONS
        fmt = torch.contiguous_format if nchw else torch.channels_last
        w = self.weight_nchw if nchw else self.weight
        if cpu:
            x = x.contiguous(memory_format=fmt)
            other = None if other is None else other.contiguous(memory_format=fmt)
        grad = torch.is_grad_enabled() and (x.requires_grad or (other is not None and other.requires_grad))
        if cpu and not grad and _fused_ops_available() and x.dtype == w.dtype == torch.float32:
            unary = "relu" if relu else "none"
            if other is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, w, self.bias, list(padding), list(self.stride), list(self.dilation), self.groups, unary, [], ""
                )
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, w, self.bias, list(padding), list(self.stride), list(self.dilation), self.groups, "add",
                1.0, unary if relu else None, [], None,
            )
        if cpu and grad and self.in_channels == 1 and self.groups == 1:
            y = _GreyStemFn.apply(x, w, self.bias, self.stride, tuple(padding), self.dilation)
        else:
            y = F.conv2d(x, w, self.bias, self.stride, tuple(padding), self.dilation, self.groups)
        if other is not None:
            y = y + other
        return torch.relu(y) if relu else y


class ConvReluMaxPool(nn.Module):
    """`FastConv2d` with a ReLU, then a MaxPool2d (a ResNet stem). With autograd the ReLU runs after
    the pool: max and ReLU commute exactly, values and gradients alike (the gradient reaches the
    window's first maximum when it is positive, nothing otherwise), and the ReLU's backward then
    reads a tensor a quarter the size."""

    def __init__(self, conv: FastConv2d, pool: nn.MaxPool2d):
        super().__init__()
        self.conv = conv
        self.kernel_size, self.stride, self.padding = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return torch.relu(self.pool(self.conv.run(x, None, self.conv.padding, relu=False)))
        return self.pool(self.conv(x))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


_AFFINE = (operator.add, operator.sub, operator.mul, operator.truediv)


class StemSplit:
    """A traced inference copy cut at its stem (`ConvReluMaxPool`), for input gradients.

    When only affine operations with constants (GrayscaleNet's normalisation) come before the
    stem's convolution, the input -> convolution-output map is affine, so its transposed Jacobian
    is one fixed linear map J^T. The input gradient of any output is J^T applied to the gradient at
    the convolution's output, and a weighted sum of input gradients (IG's steps) is J^T of the sum.
    `conv_output(x)` is that map; `pooled(y)` max-pools it (with indices, before the ReLU); `logits(p)`
    runs the rest of the network from the pooled map p (ReLU first).
    """

    def __init__(self, gm: torch.fx.GraphModule, placeholder: torch.fx.Node, prefix: list[torch.fx.Node],
                 stem: torch.fx.Node):
        self.gm, self.placeholder, self.prefix, self.stem_node = gm, placeholder, prefix, stem
        self.stem: ConvReluMaxPool = gm.get_submodule(stem.target)

    @classmethod
    def of(cls, net: nn.Module) -> "StemSplit | None":
        if not isinstance(net, torch.fx.GraphModule):
            return None
        nodes = list(net.graph.nodes)
        inputs = [n for n in nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            return None
        current, prefix = inputs[0], []
        while len(current.users) == 1:
            (user,) = current.users
            if user.op == "call_module" and isinstance(net.get_submodule(user.target), ConvReluMaxPool):
                return cls(net, inputs[0], prefix, user) if len(user.args) == 1 and not user.kwargs else None
            if not (user.op == "call_function" and user.target in _AFFINE and user.args[0] is current
                    and not user.kwargs and _constant(net, user.args[1]) is not None):
                return None
            prefix.append(user)
            current = user
        return None

    def conv_output(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.placeholder: x}
        for n in self.prefix:
            env[n] = n.target(env[n.args[0]], _constant(self.gm, n.args[1]))
        h = env[self.prefix[-1]] if self.prefix else x
        return self.stem.conv.run(h, None, self.stem.conv.padding, relu=False)

    def pooled(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.max_pool2d(y, self.stem.kernel_size, self.stem.stride, self.stem.padding, return_indices=True)

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        skip = {self.placeholder: None, **{n: None for n in self.prefix}, self.stem_node: torch.relu(p)}
        return torch.fx.Interpreter(self.gm).run(None, initial_env=skip)


def _constant(gm: nn.Module, a: Any) -> Any:
    """`a` if it is a number or a one-element tensor attribute of `gm` (its value), else None."""
    if isinstance(a, (int, float)):
        return a
    if isinstance(a, torch.fx.Node) and a.op == "get_attr":
        v: Any = gm
        for part in a.target.split("."):
            v = getattr(v, part, None)
        return v if isinstance(v, torch.Tensor) and v.numel() == 1 else None
    return None


def _fold_batch_norms(net: nn.Module) -> nn.Module:
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(net, inplace=True)
    except Exception:  # a model fx cannot trace keeps its batch norms (same maths, slower)
        return net


def _is_relu(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in (torch.relu, F.relu) and not node.kwargs.get("inplace", False) and len(node.args) == 1
    return node.op == "call_method" and node.target == "relu" and len(node.args) == 1


def _is_add(node: torch.fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2
            and not node.kwargs and all(isinstance(a, torch.fx.Node) for a in node.args))


def _is_plain_max_pool(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    pool = modules.get(node.target) if node.op == "call_module" else None
    return (type(pool) is nn.MaxPool2d and not pool.ceil_mode and not pool.return_indices
            and _pair(pool.dilation) == (1, 1) and len(node.args) == 1)


def _convertible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.dtype == torch.float32)


def _fuse_convolutions(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Identity modules dropped; every plain Conv2d, with a residual add and a ReLU that follow it
    alone, becomes one `FastConv2d` node."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op == "call_module" and type(modules.get(node.target)) is nn.Identity and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op != "call_module" or not _convertible(modules.get(node.target)) or len(node.args) != 1:
            continue
        chain, other = [node], None
        users = list(node.users)
        if len(users) == 1 and _is_add(users[0]) and users[0].args[0] is not users[0].args[1]:
            other = users[0].args[1] if users[0].args[0] is node else users[0].args[0]
            chain.append(users[0])
        users = list(chain[-1].users)
        relu = len(users) == 1 and _is_relu(users[0], modules)
        if relu:
            chain.append(users[0])
        fused = FastConv2d(modules[node.target], add=other is not None, relu=relu)
        users = list(chain[-1].users)
        if relu and other is None and len(users) == 1 and _is_plain_max_pool(users[0], modules):
            chain.append(users[0])
            fused = ConvReluMaxPool(fused, modules[users[0].target])
        parent, _, child = node.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, child, fused)
        if len(chain) == 1:
            continue
        with graph.inserting_before(chain[-1]):
            new = graph.call_module(node.target, (node.args[0],) if other is None else (node.args[0], other))
        chain[-1].replace_all_uses_with(new)
        for n in reversed(chain):
            graph.erase_node(n)
    graph.lint()
    gm.recompile()
    return gm


def inference_copy(net: nn.Module, *, fold_bn: bool = True, fuse: bool = True) -> nn.Module:
    """A frozen, eval-mode copy of `net` computing the same function faster (see the module doc)."""
    fast = copy.deepcopy(net).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fast = _fold_batch_norms(fast)
    if fuse and isinstance(fast, torch.fx.GraphModule):
        fast = _fuse_convolutions(fast)
    for mod in fast.modules():
        if getattr(mod, "inplace", None) is True:
            mod.inplace = False
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
