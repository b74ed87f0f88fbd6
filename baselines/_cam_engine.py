"""Batched class activation maps: one forward for a batch, every requested class at once.

The grad-cam library computes one map per (image, target) pair, re-running the network for each
target. We capture the target layer's activations A [B,K,h,w] once, get d logit_c / dA for all
requested classes in a single vectorised backward (`is_grads_batched`, i.e. vmap over the
grad outputs) through the head only, and hand the stacked (activation, gradient) pairs to the
library's own `get_cam_image` formulas. EigenCAM and ScoreCAM, whose library versions loop over
images, are written batched here (same formulas, see their docstrings).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# name -> grad-cam library class; imported lazily so `import baselines` stays light.
LIBRARY_CAMS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
}
BATCHED_CAMS = ("eigencam", "scorecam")
CAM_NAMES = tuple(LIBRARY_CAMS) + BATCHED_CAMS


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad (and the model is in eval mode) inside the block, so only
    the part of the graph after a captured layer is recorded."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def forward_with_leaf(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    to_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model(images)` with `layer`'s output replaced by a detached leaf that requires grad.

    Returns (logits [B,n], leaf). Call inside `frozen(model)`: the graph then starts at the leaf,
    so gradients w.r.t. it cost only the layers after it. `to_map` is not applied here; it is
    for callers that turn tokens into maps.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        if isinstance(output, (tuple, list)):
            raise TypeError(f"target layer {type(layer).__name__} returns a tuple; pick a layer returning a tensor")
        leaf = output.detach().requires_grad_(True)
        store["leaf"] = leaf
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(images)
    finally:
        handle.remove()
    if "leaf" not in store:
        raise RuntimeError(f"target layer {type(layer).__name__} was not called in the forward pass")
    return logits, store["leaf"]


def class_gradients(logits: torch.Tensor, inputs: torch.Tensor | Sequence[torch.Tensor], classes: Sequence[int]):
    """d logits[:, c] / d inputs for every c in `classes`, stacked on a new leading axis [C, ...].

    One vectorised backward (vmap over one-hot grad outputs); falls back to one backward per
    class if an operator has no batching rule.
    """
    single = isinstance(inputs, torch.Tensor)
    ins = [inputs] if single else list(inputs)
    n_cls = logits.shape[1]
    eye = torch.eye(n_cls, device=logits.device, dtype=logits.dtype)[list(classes)]  # [C,n]
    grad_out = eye[:, None, :].expand(len(classes), *logits.shape).contiguous()
    try:
        grads = torch.autograd.grad(logits, ins, grad_outputs=grad_out, is_grads_batched=True, retain_graph=True)
    except RuntimeError:
        per = [torch.autograd.grad(logits, ins, grad_outputs=g, retain_graph=True) for g in grad_out]
        grads = tuple(torch.stack([p[i] for p in per]) for i in range(len(ins)))
    return grads[0] if single else list(grads)


def _library_cam(name: str):
    import pytorch_grad_cam as lib

    return getattr(lib, LIBRARY_CAMS[name])


def library_cam_maps(name: str, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Maps [B,C,h,w] from activations [B,K,h,w] and class gradients [C,B,K,h,w] using the
    grad-cam library's `get_cam_image` of CAM `name` on all (image, class) pairs at once."""
    cls = _library_cam(name)
    n_cls, b = grads.shape[:2]
    acts = activations.detach()[None].expand(n_cls, *activations.shape).reshape(n_cls * b, *activations.shape[1:])
    g = grads.detach().reshape(n_cls * b, *grads.shape[2:])
    # get_cam_image/get_cam_weights of these classes only read their arguments, so an instance
    # without hooks (no __init__) is enough and leaves the model untouched.
    cam = cls.__new__(cls)
    cam.activations_and_grads = _NoHooks()  # BaseCAM.__del__ releases hooks; there are none
    out = cam.get_cam_image(None, None, None, acts.float().cpu().numpy(), g.float().cpu().numpy(), False)
    maps = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(n_cls, b, *out.shape[1:])
    return maps.transpose(0, 1).to(activations.device)


class _NoHooks:
    def release(self) -> None:
        pass


def eigen_cam_maps(activations: torch.Tensor) -> torch.Tensor:
    """EigenCAM (Muhammad & Yeasin 2020): projection of the centred activations on their first
    principal direction, batched with torch SVD. The library leaves the SVD sign arbitrary; we
    orient each map to correlate positively with the channel-mean activation (our choice)."""
    b, k, h, w = activations.shape
    x = activations.detach().float().reshape(b, k, h * w).transpose(1, 2)  # [B,hw,K]
    x = torch.nan_to_num(x - x.mean(dim=1, keepdim=True))
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = x @ vh[:, 0, :, None]  # [B,hw,1]
    ref = activations.detach().float().mean(1).reshape(b, h * w, 1)
    ref = ref - ref.mean(1, keepdim=True)
    sign = torch.sign((proj * ref).sum(1, keepdim=True))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign).reshape(b, 1, h, w)


@torch.no_grad()
def score_cam_maps(
    model: nn.Module,
    images: torch.Tensor,
    activations: torch.Tensor,
    classes: Sequence[int],
    *,
    max_channels: int | None = None,
    batch_size: int = 64,
    score_model: nn.Module | None = None,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020) as in the grad-cam library (min-max normalised upsampled
    channel masks times the image, softmax over channels of the class logit), but one masked
    forward serves every class, and masked images of many (image, channel) pairs share a batch
    of `batch_size` (the memory bound).

    `max_channels` keeps only the channels with the largest mean activation per image (our speed
    switch for CPU; None = all channels, as in the paper). `score_model` scores the masked images
    in place of `model` (an inference copy of it, `baselines._fast_forward`: same logits, faster).
    """
    model = score_model if score_model is not None else model
    b, k, h, w = activations.shape
    acts = activations.detach()
    if max_channels is not None and max_channels < k:
        top = acts.mean(dim=(2, 3)).topk(int(max_channels), dim=1).indices  # [B,k']
        acts = torch.gather(acts, 1, top[:, :, None, None].expand(-1, -1, h, w))
        k = acts.shape[1]
    up = F.interpolate(acts, size=images.shape[-2:], mode="bilinear", align_corners=True)
    flat = up.reshape(b, k, -1)
    lo, hi = flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
    masks = (up - lo) / (hi - lo + 1e-8)  # [B,k,H,W]
    masked = (images[:, None] * masks[:, :, None]).reshape(b * k, *images.shape[1:])  # [B*k,1,H,W]
    scores = torch.cat([model(masked[i : i + batch_size]) for i in range(0, masked.shape[0], batch_size)])
    scores = scores.reshape(b, k, -1)[:, :, list(classes)]  # [B,k,C]
    weights = torch.softmax(scores.float(), dim=1)  # over channels
    return torch.einsum("bkc,bkhw->bchw", weights, acts.float())


def normalize_maps(maps: torch.Tensor, mode: str = "minmax") -> torch.Tensor:
    """ReLU then per-map scaling. 'minmax' -> [0,1] per (image, class) map (the grad-cam library's
    convention); 'max' -> divide by the map's max; 'none' -> ReLU only."""
    maps = torch.relu(torch.nan_to_num(maps.float()))
    if mode == "none":
        return maps
    flat = maps.flatten(-2)
    hi = flat.max(-1).values[..., None, None]
    if mode == "max":
        return maps / hi.clamp_min(1e-12)
    if mode == "minmax":
        lo = flat.min(-1).values[..., None, None]
        return (maps - lo) / (hi - lo).clamp_min(1e-12)
    raise ValueError(f"unknown map normalisation {mode!r} (config key 'normalize'); use minmax, max or none")


def cam_maps(
    name: str,
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int],
    *,
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    score_cam_channels: int | None = None,
    score_cam_batch: int = 64,
    score_model: nn.Module | None = None,
) -> torch.Tensor:
    """Raw (un-normalised) maps [B,len(classes),h,w] of CAM variant `name` at `layer`.

    `reshape` turns the layer's output into a map [B,K,h,w] (e.g. ViT tokens -> grid); it is
    applied after capture, so gradients flow back to the tokens. `score_model` (Score-CAM only)
    scores the masked images in place of `model`.
    """
    if name not in CAM_NAMES:
        raise ValueError(f"unknown CAM {name!r} (config key 'cam'); choose one of {', '.join(CAM_NAMES)}")
    with frozen(model):
        if name == "scorecam":
            with torch.no_grad():
                acts = _capture(model, layer, images)
            acts = reshape(acts) if reshape else acts
            return score_cam_maps(
                model, images, acts, classes, max_channels=score_cam_channels, batch_size=score_cam_batch,
                score_model=score_model,
            )
        if name == "eigencam":
            with torch.no_grad():
                acts = _capture(model, layer, images)
            acts = reshape(acts) if reshape else acts
            return eigen_cam_maps(acts).expand(-1, len(classes), -1, -1).contiguous()
        logits, leaf = forward_with_leaf(model, layer, images)
        acts = reshape(leaf) if reshape else leaf
        grads = class_gradients(logits, leaf, classes)  # [C,B,...] in the leaf's layout
        if reshape:
            grads = reshape_batched(reshape, grads)
        return library_cam_maps(name, acts, grads)


def reshape_batched(reshape: Callable[[torch.Tensor], torch.Tensor], grads: torch.Tensor) -> torch.Tensor:
    """Apply a per-batch reshape to [C,B,...] gradients by folding C into the batch axis."""
    c, b = grads.shape[:2]
    out = reshape(grads.reshape(c * b, *grads.shape[2:]))
    return out.reshape(c, b, *out.shape[1:])


def _capture(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        model(images)
    finally:
        handle.remove()
    return store["a"]
