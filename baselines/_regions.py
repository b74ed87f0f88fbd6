"""Occlusion by region recompute: an occluding window changes only a bounded region of the early
feature maps, so only that region is recomputed, on top of the unoccluded image's activations.

A convolution's output at a position depends on its input within the receptive field; outside the
window's (growing) field of influence every activation equals the unoccluded image's. For each
(window, image) row and each layer we therefore keep only a rectangle that covers every position
the window can change, computed from the layer's input on the rectangle's support: the unoccluded
activations with the row's own rectangle of the previous layer pasted in (the halo comes from the
unoccluded map). Once a rectangle covers the whole map (ResNet-18 at 128 px: in `layer2`), the rest
of the network runs on whole maps as usual. The logits equal a full forward pass of each occluded
image to float rounding (the tests check 1e-5).

It runs on the fx graph of an inference copy (`baselines._fast_forward`): `FastConv2d` (with its
fused residual add and ReLU), `ConvReluMaxPool`, `MaxPool2d`, ReLU and elementwise arithmetic with
constants propagate rectangles; any other operation receives whole maps (exact, just not faster).

Rows of a chunk share one rectangle size per layer: the largest the chunk's windows need, each
row's rectangle placed over its own region and shifted inside the map at the borders. The crops are
slices of the unoccluded maps, one per run of a window's consecutive images.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from baselines._fast_forward import ConvReluMaxPool, FastConv2d

_ARITH = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul, torch.div}
_RELU_FNS = (torch.relu, F.relu)

Interval = tuple[int, int, int, int]  # rows [r0, r1], cols [c0, c1], inclusive


def _field(interval: Interval, k, s, p, d, out_hw) -> Interval:
    """Output positions of a windowed operation (kernel k, stride s, padding p, dilation d) that read
    an input position inside `interval` (clipped to the output map; never empty)."""
    out = []
    for axis in range(2):
        a, b = interval[2 * axis], interval[2 * axis + 1]
        lo = math.ceil((a + p[axis] - d[axis] * (k[axis] - 1)) / s[axis])
        hi = (b + p[axis]) // s[axis]
        n = out_hw[axis]
        lo, hi = min(max(lo, 0), n - 1), min(max(hi, 0), n - 1)
        out += [lo, max(lo, hi)]
    return tuple(out)


def _union(a: Interval, b: Interval) -> Interval:
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


class _Region:
    """One node's value for the rows of a chunk: `data` [N,C,h,w] over one rectangle per window
    (`starts[k]`, top-left; None: the whole map), covering the window's changed interval `fields[k]`."""

    def __init__(self, data: torch.Tensor, starts: dict[int, tuple[int, int]] | None,
                 fields: dict[int, Interval] | None):
        self.data, self.starts, self.fields = data, starts, fields

    @property
    def full(self) -> bool:
        return self.starts is None


class RegionOcclusion:
    """Logits of occluded images by region recompute, for one fx graph (see the module doc)."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes = list(gm.graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError("region occlusion needs a graph with one input")
        self.input = placeholders[0]
        self.dynamic: set[fx.Node] = {self.input}  # nodes that depend on the input image
        for n in self.nodes:
            if any(isinstance(a, fx.Node) and a in self.dynamic for a in _flat_args(n)):
                self.dynamic.add(n)
        order = {n: i for i, n in enumerate(self.nodes)}
        self.last_use = {n: max((order[u] for u in n.users), default=order[n]) for n in self.nodes}

    # -- the unoccluded pass ---------------------------------------------------------------------

    def base_pass(self, images: torch.Tensor) -> tuple[dict[fx.Node, Any], dict[fx.Node, torch.Tensor], torch.Tensor]:
        """Every node's value on the unoccluded images (and each stem's pre-pool map), and the logits."""
        env: dict[fx.Node, Any] = {}
        inner: dict[fx.Node, torch.Tensor] = {}
        out = None
        for n in self.nodes:
            if n.op == "placeholder":
                env[n] = images
            elif n.op == "output":
                out = _load(n.args[0], env)
            elif n.op == "call_module" and isinstance(self.modules[n.target], ConvReluMaxPool):
                mod = self.modules[n.target]
                inner[n] = mod.conv(_load(n.args[0], env))
                env[n] = mod.pool(inner[n])
            else:
                env[n] = self._call(n, env)
        return env, inner, out

    def _call(self, n: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args, kwargs = _load(n.args, env), _load(n.kwargs, env)
        if n.op == "get_attr":
            return _get_attr(self.gm, n.target)
        if n.op == "call_module":
            return self.modules[n.target](*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        raise RuntimeError(f"unexpected fx node {n.op}")

    # -- one chunk of occluded images ------------------------------------------------------------

    def logits(self, base: dict[fx.Node, Any], inner: dict[fx.Node, torch.Tensor],
               windows: Sequence[tuple[int, int, int, int]], rows: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Logits of rows (window k, image i) with the window set to 0 (black). Rows of one window
        must be consecutive, with consecutive images."""
        self._base, self._inner, self._pads = base, inner, {}
        self._n = len(rows)
        self._runs = _runs(rows)  # (window, first row, end row, first image)
        self._windows = windows
        env: dict[fx.Node, Any] = {}
        out = None
        for i, n in enumerate(self.nodes):
            if n.op == "output":
                out = self._full(n.args[0], env)
                break
            if n not in self.dynamic:
                env[n] = base[n]
                continue
            env[n] = self._occluded_input() if n.op == "placeholder" else self._step(n, env)
            for a in _flat_args(n):  # free what no later node reads
                if isinstance(a, fx.Node) and a in env and a in self.dynamic and self.last_use[a] <= i:
                    del env[a]
        self._base = self._inner = self._pads = self._runs = self._windows = None
        return out

    def _occluded_input(self) -> _Region:
        x = self._base[self.input]
        hw = tuple(x.shape[-2:])
        fields = {k: (r0, r1 - 1, c0, c1 - 1) for k, (r0, r1, c0, c1) in
                  ((k, self._windows[k]) for k, *_ in self._runs)}
        placed = self._placed(fields, hw)
        starts, size = placed if placed is not None else ({k: (0, 0) for k in fields}, hw)
        data = self._crop(self.input, None, starts, size, 0, 0.0)  # a fresh tensor
        for k, a, b, _ in self._runs:
            r0, r1, c0, c1 = self._windows[k]
            sr, sc = starts[k]
            data[a:b, :, r0 - sr:r1 - sr, c0 - sc:c1 - sc] = 0.0
        return _Region(data, None if placed is None else starts, None if placed is None else fields)

    @staticmethod
    def _placed(fields: dict[int, Interval], hw: tuple[int, int]):
        """(starts, size) of rectangles covering `fields`, one size for all windows; None when that
        size is the whole map."""
        size = (min(hw[0], max(f[1] - f[0] + 1 for f in fields.values())),
                min(hw[1], max(f[3] - f[2] + 1 for f in fields.values())))
        if size == tuple(hw):
            return None
        starts = {k: (min(max(f[0], 0), hw[0] - size[0]), min(max(f[2], 0), hw[1] - size[1]))
                  for k, f in fields.items()}
        return starts, size

    def _step(self, n: fx.Node, env: dict[fx.Node, Any]) -> Any:
        mod = self.modules.get(n.target) if n.op == "call_module" else None
        dyn = [a for a in _flat_args(n) if isinstance(a, fx.Node) and a in self.dynamic]
        if not all(isinstance(env[a], _Region) and not env[a].full for a in dyn):
            return self._whole(n, env)  # an input changed anywhere (or not a map): whole maps from here
        if isinstance(mod, FastConv2d):
            return self._conv(n, mod, env)
        if isinstance(mod, ConvReluMaxPool):
            return self._conv_pool(n, mod, env)
        if type(mod) is nn.MaxPool2d and not mod.ceil_mode and not mod.return_indices and _pair(mod.dilation) == (1, 1):
            return self._pool(n, env[n.args[0]], _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding),
                              n.args[0])
        if _is_pointwise(n, mod, self.dynamic):
            return self._pointwise(n, env, dyn)
        return self._whole(n, env)

    def _whole(self, n: fx.Node, env: dict[fx.Node, Any]) -> Any:
        """The node on whole maps (arguments in a rectangle are completed from the unoccluded maps)."""
        local = {a: self._full(a, env) for a in _flat_args(n) if isinstance(a, fx.Node)}
        out = self._call(n, local)
        return _Region(out, None, None) if isinstance(out, torch.Tensor) and out.dim() == 4 else out

    def _full(self, a: Any, env: dict[fx.Node, Any]) -> Any:
        if not isinstance(a, fx.Node):
            return a
        v = env[a]
        if not isinstance(v, _Region):
            return v
        if v.full:
            return v.data
        return self._crop(a, v, {k: (0, 0) for k in v.starts}, tuple(self._base[a].shape[-2:]), 0, 0.0)

    def _pointwise(self, n: fx.Node, env, dyn) -> Any:
        hw = tuple(self._base[n].shape[-2:]) if isinstance(self._base[n], torch.Tensor) else None
        if hw is None or self._base[n].dim() != 4 or any(tuple(self._base[a].shape[-2:]) != hw for a in dyn):
            return self._whole(n, env)
        fields = env[dyn[0]].fields
        for a in dyn[1:]:
            fields = {k: _union(f, env[a].fields[k]) for k, f in fields.items()}
        placed = self._placed(fields, hw)
        if placed is None:
            return self._whole(n, env)
        starts, size = placed
        local = {}
        for a in _flat_args(n):
            if isinstance(a, fx.Node):
                r = env[a]
                if a not in self.dynamic:
                    local[a] = r
                elif tuple(r.data.shape[-2:]) == size and r.starts == starts:
                    local[a] = r.data
                else:
                    local[a] = self._crop(a, r, starts, size, 0, 0.0)
        return _Region(self._call(n, local), starts, fields)

    def _conv(self, n: fx.Node, mod: FastConv2d, env) -> _Region:
        x = env[n.args[0]]
        other = n.args[1] if mod.add else None
        hw = tuple(self._base[n].shape[-2:])
        k, s, p, d = mod.kernel_size, mod.stride, mod.padding, mod.dilation
        fields = {w: _field(f, k, s, p, d, hw) for w, f in x.fields.items()}
        if other is not None and other in self.dynamic:
            fields = {w: _union(f, env[other].fields[w]) for w, f in fields.items()}
        placed = self._placed(fields, hw)
        if placed is None:
            return self._whole(n, env)
        starts, size = placed
        crop = self._support(n.args[0], x, starts, size, k, s, p, d, 0.0)
        oth = None
        if other is not None:
            oth = self._crop(other, env[other] if other in self.dynamic else None, starts, size, 0, 0.0)
        return _Region(mod.run(crop, oth, (0, 0)), starts, fields)

    def _conv_pool(self, n: fx.Node, mod: ConvReluMaxPool, env) -> _Region:
        x = env[n.args[0]]
        conv = mod.conv
        k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        mid_hw = tuple(self._inner[n].shape[-2:])
        fields = {w: _field(f, k, s, p, d, mid_hw) for w, f in x.fields.items()}
        placed = self._placed(fields, mid_hw)
        if placed is None:
            return self._whole(n, env)
        starts, size = placed
        crop = self._support(n.args[0], x, starts, size, k, s, p, d, 0.0)
        mid = _Region(conv.run(crop, None, (0, 0)), starts, fields)
        return self._pool(n, mid, mod.kernel_size, mod.stride, mod.padding, ("inner", n))

    def _pool(self, n: fx.Node, x: _Region, k, s, p, src) -> _Region:
        hw = tuple(self._base[n].shape[-2:])
        fields = {w: _field(f, k, s, p, (1, 1), hw) for w, f in x.fields.items()}
        placed = self._placed(fields, hw)
        if placed is None:
            whole = self._crop(src, x, {w: (0, 0) for w in fields}, tuple(self._source(src).shape[-2:]), 0, 0.0)
            return _Region(F.max_pool2d(whole, k, s, p), None, None)
        starts, size = placed
        crop = self._support(src, x, starts, size, k, s, p, (1, 1), float("-inf"))
        return _Region(F.max_pool2d(crop, k, s, 0), starts, fields)

    # -- gathering rectangles ------------------------------------------------------------------

    def _source(self, src) -> torch.Tensor:
        return self._inner[src[1]] if isinstance(src, tuple) else self._base[src]

    def _support(self, src, x: _Region, out_starts, out_size, k, s, p, d, pad_value) -> torch.Tensor:
        """The input a windowed operation reads for its output rectangles, padding (`pad_value`)
        included: a crop of the padded unoccluded map with `x` pasted in."""
        size = tuple(s[i] * (out_size[i] - 1) + d[i] * (k[i] - 1) + 1 for i in range(2))
        starts = {w: (s[0] * r - p[0], s[1] * c - p[1]) for w, (r, c) in out_starts.items()}
        return self._crop(src, x, starts, size, max(p), pad_value)

    def _padded(self, src, pad: int, value: float) -> torch.Tensor:
        """The unoccluded map of `src` as [B,H,W,C] (a channels-last view), padded by `pad`."""
        key = (src, pad, value)
        if key not in self._pads:
            base = self._source(src).permute(0, 2, 3, 1)
            if pad:
                b, h, w, c = base.shape
                padded = base.new_full((b, h + 2 * pad, w + 2 * pad, c), value)
                padded[:, pad:pad + h, pad:pad + w] = base
                base = padded
            self._pads[key] = base
        return self._pads[key]

    def _crop(self, src, x: _Region | None, starts: dict[int, tuple[int, int]], size: tuple[int, int], pad: int,
              value: float) -> torch.Tensor:
        """[N,C,*size] (channels-last): each window's rectangle at `starts[k]` (map coordinates, at
        least -pad) of the unoccluded map of `src` padded by `pad` with `value`, with the rows'
        own values `x` pasted in where their rectangles overlap."""
        padded = self._padded(src, pad, value)
        c = padded.shape[-1]
        out = padded.new_empty(self._n, size[0], size[1], c)
        xd = None if x is None else x.data.permute(0, 2, 3, 1)
        xh, xw = (0, 0) if x is None else tuple(x.data.shape[-2:])
        for k, a, b, i in self._runs:
            r, q = starts[k]
            out[a:b] = padded[i:i + b - a, r + pad:r + pad + size[0], q + pad:q + pad + size[1]]
            if xd is None:
                continue
            xr, xq = (0, 0) if x.full else x.starts[k]
            r0, r1 = max(r, xr), min(r + size[0], xr + xh)
            q0, q1 = max(q, xq), min(q + size[1], xq + xw)
            if r0 < r1 and q0 < q1:
                out[a:b, r0 - r:r1 - r, q0 - q:q1 - q] = xd[a:b, r0 - xr:r1 - xr, q0 - xq:q1 - xq]
        return out.permute(0, 3, 1, 2)


def _runs(rows: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """(window, first row, end row, first image) of each run of consecutive rows of one window."""
    out: list[tuple[int, int, int, int]] = []
    for r, (k, i) in enumerate(rows):
        if out and out[-1][0] == k and out[-1][2] == r and rows[r - 1][1] + 1 == i:
            out[-1] = (k, out[-1][1], r + 1, out[-1][3])
        else:
            out.append((k, r, r + 1, i))
    return out


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _flat_args(n: fx.Node) -> list[Any]:
    out: list[Any] = []
    fx.node.map_aggregate((n.args, n.kwargs), out.append)
    return out


def _load(a: Any, env: dict[fx.Node, Any]) -> Any:
    return fx.node.map_aggregate(a, lambda v: env[v] if isinstance(v, fx.Node) else v)


def _get_attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_pointwise(n: fx.Node, mod: nn.Module | None, dynamic: set[fx.Node]) -> bool:
    """An elementwise operation whose inputs not depending on the image are scalars or one-element
    tensors (so it acts the same on any rectangle)."""
    if type(mod) is nn.ReLU:
        return True
    if n.op == "call_function" and n.target in _RELU_FNS:
        return not n.kwargs.get("inplace", False)
    if n.op == "call_method" and n.target == "relu":
        return True
    if n.op == "call_function" and n.target in _ARITH and not n.kwargs and len(n.args) == 2:
        return all(isinstance(a, (int, float)) or (isinstance(a, fx.Node) and (a in dynamic or _scalar_attr(a)))
                   for a in n.args)
    return False


def _scalar_attr(a: fx.Node) -> bool:
    if a.op != "get_attr":
        return False
    try:
        v = _get_attr(a.graph.owning_module, a.target)
    except AttributeError:
        return False
    return isinstance(v, torch.Tensor) and v.numel() == 1
