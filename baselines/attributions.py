"""Saliency baselines on the same timm ResNet as the CAM family: Integrated Gradients and
Occlusion, batched over images, classes, steps and windows.

With the default ``share_checkpoint="auto"`` and matching presets these reuse the ResNet that
`gradcam` trained in the same run. Maps are pixel-level; we average-pool them by `pool` (our
choice: pixel attributions are speckled, and box extraction works on regions).

Two engines compute the same maps (config key `engine`):

- ``"batched"`` (default): our own loops on a fast inference copy of the network
  (`baselines._fast_forward`). IG runs one forward pass per (image, step) for all classes, then
  one backward pass per class through that graph, stopping at the stem (whose fixed transposed
  Jacobian then runs once per image and class); Occlusion runs one pass per (image, window),
  recomputing only what the window changes in the early layers (`baselines._regions`), and every
  class reads its logit from it. Both chunk their stacked rows (`internal_batch_size`,
  `perturbations_per_eval`), which bounds peak memory.
- ``"captum"``: captum's IntegratedGradients / Occlusion, as the reference. IG there runs one
  forward + backward per (image, class, step).

The tests check that both engines give the same maps to float tolerance.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from baselines._fast_forward import StemSplit, cached_inference_copy
from baselines.cam import _RESNET_PRESETS, TimmCNNMethod
from wsl_bench.methods import register_method

ENGINES = ("batched", "captum")


def _signed(attr: torch.Tensor, sign: str) -> torch.Tensor:
    if sign == "positive":
        return attr.clamp_min(0)
    if sign == "absolute":
        return attr.abs()
    raise ValueError(f"unknown attribution sign {sign!r} (config key 'sign'); use positive or absolute")


def _pool(maps: torch.Tensor, pool: int) -> torch.Tensor:
    return F.avg_pool2d(maps, pool) if pool and pool > 1 else maps


class CaptumAttribution(TimmCNNMethod):
    """Shared plumbing: ResNet training (as the CAM family), sign handling, pooling."""

    # engine: "batched" (ours, fast) or "captum" (the reference); same maps (see the module doc)
    base_defaults = {**TimmCNNMethod.base_defaults, "sign": "positive", "pool": 4, "engine": "batched"}

    def explain_batch(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        net = self.ensure_net().eval()
        engine = str(self.config.get("engine", "batched"))
        if engine not in ENGINES:
            raise ValueError(f"unknown attribution engine {engine!r} (config key 'engine'); use {' or '.join(ENGINES)}")
        if engine == "batched":
            attr = self.attribute_batched(cached_inference_copy(self, net), images, list(classes))
        else:
            flags = [p.requires_grad for p in net.parameters()]
            for p in net.parameters():
                p.requires_grad_(False)  # captum only needs input gradients
            try:
                attr = self.attribute(net, images, list(classes))  # [B,C,H,W]
            finally:
                for p, f in zip(net.parameters(), flags):
                    p.requires_grad_(f)
        return _pool(_signed(attr.float(), str(self.config.get("sign", "positive"))), int(self.config.get("pool") or 1))

    def attribute(self, net, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
        """captum's attribution [B,C,H,W] (the reference engine)."""
        raise NotImplementedError

    def attribute_batched(self, net, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
        """Our batched attribution [B,C,H,W]; equals `attribute` to float tolerance."""
        raise NotImplementedError


@register_method("integrated-gradients")
class IntegratedGradientsMethod(CaptumAttribution):
    """captum Integrated Gradients (black-image baseline) on a timm ResNet trained on the cohort."""

    paper = "Sundararajan et al., Axiomatic attribution for deep networks, ICML 2017"
    # internal_batch_size: (image, step) rows per forward pass in the batched engine; captum's
    # (image, class, step) rows per forward + backward in the captum engine. stem_split (batched
    # engine): backward passes stop at the stem, whose transposed Jacobian runs once per image and
    # class (same maps); False: every backward pass runs to the input
    base_defaults = {**CaptumAttribution.base_defaults, "n_steps": 32, "internal_batch_size": 128, "stem_split": True}
    presets = {
        "quick": {**_RESNET_PRESETS["quick"], "n_steps": 8, "internal_batch_size": 128},
        # the shared standard ResNet-18 at 224 px; 4-px cells as in quick (56x56 maps)
        "standard": {**_RESNET_PRESETS["standard"], "n_steps": 8, "internal_batch_size": 128, "pool": 4},
        "paper": {**_RESNET_PRESETS["paper"], "n_steps": 50, "internal_batch_size": 256, "pool": 8},
    }

    def attribute(self, net, images, classes):
        from captum.attr import IntegratedGradients

        b, c = images.shape[0], len(classes)
        # every (image, class) pair is one captum example; captum batches their interpolation steps
        inputs = images.repeat_interleave(c, dim=0)
        targets = torch.tensor(classes * b, device=images.device)
        attr = IntegratedGradients(net).attribute(
            inputs,
            baselines=torch.zeros_like(inputs),
            target=targets,
            n_steps=int(self.config["n_steps"]),
            internal_batch_size=int(self.config["internal_batch_size"]),
        )
        return attr.reshape(b, c, *images.shape[-2:])

    def attribute_batched(self, net, images, classes):
        return integrated_gradients(net, images, classes, n_steps=int(self.config["n_steps"]),
                                    rows=int(self.config["internal_batch_size"]),
                                    stem_split=bool(self.config.get("stem_split", True)))


@register_method("occlusion")
class OcclusionMethod(CaptumAttribution):
    """captum Occlusion (sliding black patch) on a timm ResNet; one sweep scores all classes."""

    paper = "Zeiler & Fergus, Visualizing and understanding convolutional networks, ECCV 2014"
    # perturbations_per_eval: occluded images per forward pass in the batched engine; windows per
    # forward (times the batch) in the captum engine
    # region_recompute (batched engine): recompute only the part of the early feature maps a window
    # changes, on top of the unoccluded image's (baselines/_regions.py; same maps); False: whole
    # forward passes of every occluded image
    base_defaults = {**CaptumAttribution.base_defaults, "window": 16, "stride": 8, "perturbations_per_eval": 64,
                     "pool": 1, "region_recompute": True}
    presets = {
        "quick": {**_RESNET_PRESETS["quick"], "window": 32, "stride": 16, "perturbations_per_eval": 64, "pool": 1},
        # windows every 16 px make the map constant on 16-px cells: pooling by 16 loses nothing (14x14 at 224 px)
        "standard": {**_RESNET_PRESETS["standard"], "window": 32, "stride": 16, "perturbations_per_eval": 64,
                     "pool": 16},
        "paper": {**_RESNET_PRESETS["paper"], "window": 32, "stride": 16, "perturbations_per_eval": 64, "pool": 4},
    }

    @torch.no_grad()
    def attribute(self, net, images, classes):
        from captum.attr import Occlusion

        b, c = images.shape[0], len(classes)
        win, stride = int(self.config["window"]), int(self.config["stride"])
        # forward returns [B,C]: captum then attributes every output element in the same sweep,
        # laid out (image, class)-major (checked against per-class calls in the tests)
        attr = Occlusion(lambda x: net(x)[:, classes]).attribute(
            images,
            sliding_window_shapes=(images.shape[1], win, win),
            strides=(images.shape[1], stride, stride),
            baselines=0.0,
            perturbations_per_eval=int(self.config["perturbations_per_eval"]),
        )
        return attr.reshape(b, c, *images.shape[-2:])

    def attribute_batched(self, net, images, classes):
        return occlusion(net, images, classes, window=int(self.config["window"]), stride=int(self.config["stride"]),
                         rows=int(self.config["perturbations_per_eval"]),
                         region=bool(self.config.get("region_recompute", True)))


def gauss_legendre(n_steps: int) -> tuple[list[float], list[float]]:
    """(step sizes, alphas) of the n-point Gauss-Legendre rule on [0, 1]: captum's default IG rule."""
    nodes, weights = np.polynomial.legendre.leggauss(int(n_steps))
    return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()


# The stem-split IG keeps one stem-output-sized gradient per (image, class); images are processed in
# groups whose accumulators stay below this many bytes.
STEM_ACCUMULATOR_BYTES = 256 * 2**20


def integrated_gradients(net, images: torch.Tensor, classes: Sequence[int], *, n_steps: int,
                         rows: int = 128, stem_split: bool = True) -> torch.Tensor:
    """Integrated Gradients [B,C,H,W] from a black baseline, Gauss-Legendre steps (captum's rule).

    The interpolated images do not depend on the class, so each (image, step) row is forwarded
    once and every class gets its input gradient from a backward pass through that one graph
    (captum forwards every (image, class, step) row). `rows` (image, step) rows share a forward
    pass, which bounds the memory the graph holds.

    With `stem_split` (on a CPU, for a traced inference copy whose stem follows an affine input
    normalisation: `baselines._fast_forward.StemSplit`) the backward passes stop at the stem's
    pooled map. Each class's gradient goes back to the stem convolution's output through the pool's
    indices, weighted by its step and summed over the steps; the stem's fixed transposed Jacobian
    (convolution and normalisation) then runs once per (image, class) instead of once per (image,
    step, class). The maps are the same to float rounding.
    """
    classes = [int(c) for c in classes]
    x = images.detach()
    split = StemSplit.of(net) if stem_split and x.device.type == "cpu" else None
    if split is None:
        total = _ig_input_gradients(net, x, classes, n_steps, rows)
    else:
        total = _ig_stem_split(split, x, classes, n_steps, rows)
    # [C,B,1,H,W] -> [B,C,H,W] (grey input: one channel, as the captum engine's reshape)
    return (total * x.float()).transpose(0, 1).reshape(x.shape[0], len(classes), *x.shape[-2:])


def _ig_rows(b: int, n_steps: int, rows: int, device):
    """Chunks of (step, image) rows, step-major as in captum: row r = (step r // b, image r % b)."""
    step_rows = max(1, int(rows))
    for start in range(0, n_steps * b, step_rows):
        idx = torch.arange(start, min(start + step_rows, n_steps * b), device=device)
        yield idx // b, idx % b


def _ig_input_gradients(net, x: torch.Tensor, classes: list[int], n_steps: int, rows: int) -> torch.Tensor:
    """Sum over steps of weight x input gradient, [C,B,1,H,W]: one backward pass per class to the input."""
    step_sizes, alphas = gauss_legendre(n_steps)
    weights = torch.tensor(step_sizes, dtype=torch.float32, device=x.device)
    alphas_t = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    total = torch.zeros(len(classes), *x.shape, dtype=torch.float32, device=x.device)
    shape = (-1, *([1] * (x.dim() - 1)))
    for step, img in _ig_rows(x.shape[0], n_steps, rows, x.device):
        scaled = (alphas_t[step].view(shape) * x[img]).requires_grad_(True)
        with torch.enable_grad():
            logits = net(scaled)
            for j, c in enumerate(classes):
                (grad,) = torch.autograd.grad(logits[:, c].sum(), scaled, retain_graph=j < len(classes) - 1)
                total[j].index_add_(0, img, grad.float() * weights[step].view(shape))
        del logits, scaled
    return total


def _ig_stem_split(split: StemSplit, x: torch.Tensor, classes: list[int], n_steps: int, rows: int) -> torch.Tensor:
    """As `_ig_input_gradients`, with the backward passes stopping at the stem (see `integrated_gradients`)."""
    step_sizes, alphas = gauss_legendre(n_steps)
    weights = torch.tensor(step_sizes, dtype=torch.float32)
    alphas_t = torch.tensor(alphas, dtype=x.dtype)
    total = torch.zeros(len(classes), *x.shape, dtype=torch.float32)
    with torch.no_grad():
        ch, hy, wy = split.conv_output(x[:1]).shape[1:]
    group = max(1, min(x.shape[0], STEM_ACCUMULATOR_BYTES // (4 * len(classes) * ch * hy * wy)))
    for g0 in range(0, x.shape[0], group):
        xs = x[g0:g0 + group]
        acc = torch.zeros(len(classes), xs.shape[0] * ch * hy * wy)  # per (image, class): d/d(conv output)
        for step, img in _ig_rows(xs.shape[0], n_steps, rows, x.device):
            with torch.no_grad():
                pooled, where = split.pooled(split.conv_output(alphas_t[step].view(-1, 1, 1, 1) * xs[img]))
            # flat position in acc of every pooled value's source: (image, channel, its argmax)
            dest = ((img[:, None] * ch + torch.arange(ch)) * (hy * wy))[:, :, None, None] + where
            dest = dest.reshape(-1)
            leaf = pooled.requires_grad_(True)
            with torch.enable_grad():
                logits = split.logits(leaf)
                for j, c in enumerate(classes):
                    (grad,) = torch.autograd.grad(logits[:, c].sum(), leaf, retain_graph=j < len(classes) - 1)
                    acc[j].index_add_(0, dest, (grad.float() * weights[step].view(-1, 1, 1, 1)).reshape(-1))
            del logits, leaf
        x0 = torch.zeros_like(xs).requires_grad_(True)  # the map is affine: its Jacobian is the same anywhere
        with torch.enable_grad():
            y0 = split.conv_output(x0)
            for j in range(len(classes)):
                (dx,) = torch.autograd.grad(y0, x0, acc[j].view(y0.shape), retain_graph=j < len(classes) - 1)
                total[j, g0:g0 + xs.shape[0]] = dx
    return total


def occlusion_windows(size: tuple[int, int], window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of every occluding window, captum's placement: ceil((S - w) / s) + 1
    positions per axis, the last one clipped at the border."""
    out = []
    h, w = size
    if window > h or window > w:
        raise ValueError(f"occlusion window {window} exceeds the image size {h}x{w} (config key 'window')")
    if stride > window and (h > window or w > window):
        raise ValueError(f"occlusion stride {stride} exceeds the window {window} (config keys 'stride', 'window')")
    rows = [i * stride for i in range(math.ceil((h - window) / stride) + 1)]
    cols = [i * stride for i in range(math.ceil((w - window) / stride) + 1)]
    for r in rows:
        for c in cols:
            out.append((r, min(r + window, h), c, min(c + window, w)))
    return out


@torch.no_grad()
def occlusion(net, images: torch.Tensor, classes: Sequence[int], *, window: int, stride: int,
              rows: int = 64, region: bool = True) -> torch.Tensor:
    """Occlusion [B,C,H,W] with a black window (captum's formula: the mean, over the windows
    covering a pixel, of logit(image) - logit(occluded image)).

    One forward pass of each occluded image gives every class's logit. `rows` occluded images
    share a forward pass (the memory bound). With `region` (on a CPU, for a traced inference copy)
    the pass recomputes only what the window changes (`baselines._regions`); the logits are the
    same to float rounding.
    """
    classes = [int(c) for c in classes]
    b, _, h, w = images.shape
    wins = occlusion_windows((h, w), int(window), int(stride))
    x = images.detach()
    if region and isinstance(net, torch.fx.GraphModule) and x.device.type == "cpu":
        # The region engine runs many small operations (crops, pastes, convolutions on crops). Spread
        # over two threads on the shared 2-core machine (load ≈ 5) it took 4.2x as long as on one
        # (whole forward passes: 1.7x), so it runs on one thread; explain processes (`--devices N
        # --strategy ddp`) are the way to use more cores.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _occlusion(net, x, classes, wins, rows, region=True)
        finally:
            torch.set_num_threads(threads)
    return _occlusion(net, x, classes, wins, rows, region=False)


def _occlusion(net, x: torch.Tensor, classes: list[int], wins, rows: int, region: bool) -> torch.Tensor:
    b, _, h, w = x.shape
    engine = None
    if region:
        from baselines._regions import RegionOcclusion

        engine = RegionOcclusion(net)
        env, inner, logits = engine.base_pass(x)
    else:
        logits = net(x)
    base = logits[:, classes].float()  # [B,C]
    total = torch.zeros(b, len(classes), h, w, dtype=torch.float32, device=x.device)
    count = torch.zeros(h, w, dtype=torch.float32, device=x.device)
    for r0, r1, c0, c1 in wins:
        count[r0:r1, c0:c1] += 1
    pairs = [(k, i) for k in range(len(wins)) for i in range(b)]  # window-major, as captum's sweep
    step = max(1, int(rows))
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        if engine is not None:
            out = engine.logits(env, inner, wins, chunk)
        else:
            occluded = x[[i for _, i in chunk]]  # advanced indexing copies
            for row, (k, _) in enumerate(chunk):
                r0, r1, c0, c1 = wins[k]
                occluded[row, :, r0:r1, c0:c1] = 0.0
            out = net(occluded)
        diff = base[[i for _, i in chunk]] - out[:, classes].float()  # [rows,C]
        for row, (k, i) in enumerate(chunk):
            r0, r1, c0, c1 = wins[k]
            total[i, :, r0:r1, c0:c1] += diff[row][:, None, None]
    return total / count
