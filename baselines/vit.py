"""Explanations of timm Vision Transformers: attention rollout, gradient-weighted rollout,
last-layer class-token attention, and Grad-CAM on patch tokens.

All four share one trained ViT per run (``share_checkpoint="auto"``). They work for any number
of prefix tokens (class + register tokens, `model.num_prefix_tokens`) and any patch grid (the
grid is read off the token count and the image's aspect, `dynamic_img_size=True`). timm's fused
attention (scaled_dot_product_attention) never materialises the attention matrix, so explaining
switches every Attention module to its explicit path (`fused_attn=False`, same maths) and hooks
`attn_drop`, whose input is the softmaxed attention [B,heads,N,N].
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from baselines._backbones import GrayscaleNet, create_timm, load_local_weights
from baselines._cam_engine import LIBRARY_CAMS, cam_maps, class_gradients, frozen
from baselines._trainable import TrainedNetMethod
from wsl_bench.methods import register_method
from wsl_bench.stems import check_patch_stem, set_patch_stem

HEAD_FUSIONS = ("mean", "max", "min")
EXPLAINERS = ("rollout", "grad-rollout", "attention", "gradcam")


# --------------------------------------------------------------------------------------------
# attention capture


@contextlib.contextmanager
def attention_maps(model: nn.Module, keep_graph: bool = False) -> Iterator[list[torch.Tensor]]:
    """Within the block, forward passes append each attention layer's softmaxed attention
    [B,heads,N,N] to the yielded list (in call order). Fused attention is switched off meanwhile."""
    store: list[torch.Tensor] = []
    attns = [m for m in model.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]
    if not attns:
        raise ValueError(f"{type(model).__name__} has no timm Attention modules to explain")
    saved = [m.fused_attn for m in attns]
    handles = []

    def hook(_module, inputs, _output):
        store.append(inputs[0] if keep_graph else inputs[0].detach())

    for m in attns:
        m.fused_attn = False
        handles.append(m.attn_drop.register_forward_hook(hook))
    try:
        yield store
    finally:
        for m, f in zip(attns, saved):
            m.fused_attn = f
        for h in handles:
            h.remove()


def token_grid(n_patches: int, height: int, width: int) -> tuple[int, int]:
    """The (rows, cols) patch grid of `n_patches` tokens for an image of height x width."""
    rows = max(1, round(math.sqrt(n_patches * height / width)))
    for r in (rows, rows - 1, rows + 1):
        if r > 0 and n_patches % r == 0 and abs(n_patches // r / r - width / height) <= 0.5 * width / height:
            return r, n_patches // r
    raise ValueError(f"cannot arrange {n_patches} patch tokens on a grid for a {height}x{width} image")


def tokens_to_map(tokens: torch.Tensor, num_prefix: int, height: int, width: int) -> torch.Tensor:
    """[B,N,D] tokens (prefix tokens first) -> [B,D,rows,cols] patch-token map."""
    patches = tokens[:, num_prefix:]
    rows, cols = token_grid(patches.shape[1], height, width)
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)


# --------------------------------------------------------------------------------------------
# rollout maths (pure functions on attention tensors; the known-answer tests target these)


def fuse_heads(attn: torch.Tensor, fusion: str) -> torch.Tensor:
    """[...,heads,N,N] -> [...,N,N] by mean, max or min over heads."""
    if fusion == "mean":
        return attn.mean(-3)
    if fusion == "max":
        return attn.amax(-3)
    if fusion == "min":
        return attn.amin(-3)
    raise ValueError(f"unknown head fusion {fusion!r} (config key 'head_fusion'); use mean, max or min")


def discard_lowest(attn: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest `ratio` fraction of each [N,N] matrix's entries, never the
    class-token-to-itself entry (as in the reference rollout code of J. Gildenblat)."""
    if ratio <= 0:
        return attn
    n = attn.shape[-1]
    flat = attn.reshape(-1, n * n).clone()
    k = int(flat.shape[1] * ratio)
    if k == 0:
        return attn
    idx = flat.topk(k, dim=-1, largest=False).indices
    keep0 = flat[:, :1].clone()
    flat.scatter_(1, idx, 0.0)
    flat[:, :1] = keep0
    return flat.reshape(attn.shape)


def rollout(attentions: Sequence[torch.Tensor], *, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): R = Â_L ... Â_1 with Â = rownorm(0.5 A + 0.5 I),
    A the head-fused attention of a layer [B,heads,N,N] after discarding its lowest entries.
    Returns R [B,N,N]; row i says how much each input token flows into output token i."""
    fused = [discard_lowest(fuse_heads(a.float(), head_fusion), discard_ratio) for a in attentions]
    return _roll(fused)


def _roll(fused: Sequence[torch.Tensor]) -> torch.Tensor:
    n = fused[0].shape[-1]
    eye = torch.eye(n, device=fused[0].device, dtype=fused[0].dtype)
    result = eye.expand_as(fused[0]).clone()
    for a in fused:
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        result = a @ result
    return result


def gradient_rollout(
    attentions: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    *,
    rule: str = "chefer",
    discard_ratio: float = 0.0,
) -> torch.Tensor:
    """Class-specific rollout from attentions A_l [...,heads,N,N] and d logit / d A_l.

    rule "chefer" (Chefer, Gur & Wolf, ICCV 2021, generic attention explainability):
      R = I; for each layer R = R + mean_h((dA ⊙ A)^+) R.
    rule "gildenblat" (the vit-explain "gradient rollout"): Â = (mean_h(dA ⊙ A))^+ then plain rollout.
    """
    if rule == "chefer":
        n = attentions[0].shape[-1]
        eye = torch.eye(n, device=attentions[0].device, dtype=torch.float32)
        r = eye.expand(*attentions[0].shape[:-3], n, n).clone()
        for a, g in zip(attentions, grads):
            cam = (g.float() * a.float()).clamp_min(0).mean(-3)
            r = r + cam @ r
        return r
    if rule == "gildenblat":
        fused = [discard_lowest((g.float() * a.float()).mean(-3).clamp_min(0), discard_ratio) for a, g in zip(attentions, grads)]
        return _roll(fused)
    raise ValueError(f"unknown gradient-rollout rule {rule!r} (config key 'grad_rollout_rule'); use chefer or gildenblat")


def cls_to_patches(relevance: torch.Tensor, num_prefix: int, height: int, width: int, cls_index: int = 0) -> torch.Tensor:
    """Row `cls_index` of a token relevance matrix [...,N,N] over the patch tokens -> [...,rows,cols]."""
    row = relevance[..., cls_index, num_prefix:]
    rows, cols = token_grid(row.shape[-1], height, width)
    return row.reshape(*row.shape[:-1], rows, cols)


# --------------------------------------------------------------------------------------------
# the method


class ViTExplainer(TrainedNetMethod):
    """A timm ViT trained on the cohort, explained by rollout, gradient rollout, class-token
    attention or Grad-CAM on patch tokens (config key `explainer`)."""

    paper = "Abnar & Zuidema, Quantifying attention flow in transformers, ACL 2020"
    base_defaults = {
        **TrainedNetMethod.base_defaults,
        "arch": "vit_tiny_patch16_224",
        "patch_size": 16,
        "reg_tokens": 0,  # register tokens (Darcet et al. 2024); they count as prefix tokens
        "drop_path_rate": 0.0,
        "lr": 5e-4,
        "weight_decay": 0.05,
        "explainer": "rollout",
        "head_fusion": "mean",
        "discard_ratio": 0.0,
        "grad_rollout_rule": "chefer",
        "cam": "gradcam",  # Grad-CAM variant for explainer=gradcam (library formula)
        "gradcam_layer": "last_norm1",  # input of the last block's attention (tokens all still mix)
        "class_chunk": 8,  # classes per vectorised backward (memory knob for large grids)
    }
    # `patch_stem` ("linear" when absent, or "conv": wsl_bench.stems) and `warmup_frac` (None when absent: a
    # constant rate; else CLARiTy's warm-up + cosine) are set by the standard preset only, so the configs, and
    # the stage keys, of quick and paper runs stay as they were before the keys existed
    train_keys = TrainedNetMethod.train_keys + ("patch_size", "patch_stem", "warmup_frac", "reg_tokens",
                                                "drop_path_rate")
    presets = {
        # ViT-Tiny/16 at 128 px (8x8 grid) trains at ~57 img/s on 2 cores.
        "quick": {"arch": "vit_tiny_patch16_224", "patch_size": 16, "max_epochs": 3, "batch_size": 32, "lr": 5e-4},
        # The quick ViT at 224 px (14x14 patch grid) trained as CLARiTy's standard preset trains its ViT: the
        # convolutional patch stem and a 10 % warm-up + cosine schedule (from scratch on 2,400 images the linear
        # patchify barely learns, and a constant rate lets the conv-stem ViT diverge: docs/baselines.md), until
        # validation mean AUROC stops improving.
        "standard": {"arch": "vit_tiny_patch16_224", "patch_size": 16, "patch_stem": "conv", "warmup_frac": 0.1,
                     "max_epochs": 20, "batch_size": 32, "lr": 5e-4, "patience": 3},
        # ViT-S/16 as in CLARiTy-S-16 (its size is the data's, e.g. 224 or 512 px).
        "paper": {"arch": "vit_small_patch16_224", "patch_size": 16, "max_epochs": 30, "batch_size": 64, "lr": 2.5e-4,
                  "weight_decay": 0.05, "drop_path_rate": 0.1, "patience": 5, "explain_batch_size": 8, "class_chunk": 4},
    }

    def __init__(self, config: dict[str, Any] | None = None, device: str | torch.device = "cpu"):
        super().__init__(config, device)
        check_patch_stem(self.config.get("patch_stem", "linear"))  # fail before any fit, not at the first build

    def share_family(self) -> str:
        return "timm-vit"

    def build_net(self) -> nn.Module:
        kwargs: dict[str, Any] = {
            "patch_size": int(self.config["patch_size"]),
            "dynamic_img_size": True,
            "drop_path_rate": float(self.config.get("drop_path_rate") or 0.0),
        }
        if int(self.config.get("reg_tokens") or 0):
            kwargs["reg_tokens"] = int(self.config["reg_tokens"])
        model = create_timm(self.config["arch"], image_size=self.image_size, **kwargs)
        set_patch_stem(model, str(self.config.get("patch_stem") or "linear"))
        if self.config.get("weights"):  # after the stem, so a file made with a conv stem loads into one
            load_local_weights(model, self.config["weights"])
        return GrayscaleNet(model)

    # -- explanations ------------------------------------------------------------------------
    @property
    def vit(self) -> nn.Module:
        return self.ensure_net().model

    def explain_batch(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        kind = str(self.config.get("explainer", "rollout"))
        h, w = images.shape[-2:]
        prefix = int(self.vit.num_prefix_tokens)
        if kind == "rollout":
            attns = self._attentions(images)
            r = rollout(attns, head_fusion=self.config["head_fusion"], discard_ratio=float(self.config["discard_ratio"]))
            return cls_to_patches(r, prefix, h, w)[:, None].expand(-1, len(classes), -1, -1)
        if kind == "attention":
            attn = fuse_heads(self._attentions(images)[-1].float(), self.config["head_fusion"])
            return cls_to_patches(attn, prefix, h, w)[:, None].expand(-1, len(classes), -1, -1)
        if kind == "grad-rollout":
            return torch.cat([self._grad_rollout(images, chunk, prefix) for chunk in self._class_chunks(classes)], 1)
        if kind == "gradcam":
            cam = str(self.config.get("cam", "gradcam"))
            if cam not in LIBRARY_CAMS:
                raise ValueError(f"explainer=gradcam supports cam in {', '.join(LIBRARY_CAMS)}, got {cam!r}")
            layer = self.gradcam_target()
            reshape = self.gradcam_reshape(h, w)
            net = self.ensure_net()
            return torch.cat([cam_maps(cam, net, layer, images, chunk, reshape=reshape) for chunk in self._class_chunks(classes)], 1)
        raise ValueError(f"unknown explainer {kind!r} (config key 'explainer'); choose one of {', '.join(EXPLAINERS)}")

    def gradcam_target(self) -> nn.Module:
        where = str(self.config.get("gradcam_layer", "last_norm1"))
        if where == "last_norm1":
            return self.vit.blocks[-1].norm1
        if where == "last_block":
            return self.vit.blocks[-1]
        raise ValueError(f"unknown gradcam_layer {where!r}; use last_norm1 or last_block")

    def gradcam_reshape(self, h: int, w: int):
        prefix = int(self.vit.num_prefix_tokens)
        return lambda tokens: tokens_to_map(tokens, prefix, h, w)

    def _class_chunks(self, classes: Sequence[int]) -> list[list[int]]:
        size = max(1, int(self.config.get("class_chunk") or len(classes)))
        return [list(classes[i : i + size]) for i in range(0, len(classes), size)]

    @torch.no_grad()
    def _attentions(self, images: torch.Tensor) -> list[torch.Tensor]:
        net = self.ensure_net().eval()
        with attention_maps(net) as store:
            net(images)
        return list(store)

    def _grad_rollout(self, images: torch.Tensor, classes: Sequence[int], prefix: int) -> torch.Tensor:
        net = self.ensure_net()
        with frozen(net), attention_maps(net, keep_graph=True) as store, torch.enable_grad():
            x = images.detach().requires_grad_(True)  # roots the graph (parameters are frozen)
            logits = net(x)
            attns = list(store)
            grads = class_gradients(logits, attns, classes)  # list over layers of [C,B,H,N,N]
        attns_c = [a.detach()[None].expand_as(g) for a, g in zip(attns, grads)]
        r = gradient_rollout(attns_c, grads, rule=str(self.config["grad_rollout_rule"]),
                             discard_ratio=float(self.config["discard_ratio"]))  # [C,B,N,N]
        h, w = images.shape[-2:]
        return cls_to_patches(r, prefix, h, w).transpose(0, 1)


_VIT_NAMES = {
    "rollout": ("rollout", "Attention rollout over all layers of a timm ViT trained on the cohort",
                "Abnar & Zuidema, Quantifying attention flow in transformers, ACL 2020"),
    "grad-rollout": ("grad-rollout", "Gradient-weighted attention rollout (class-specific) on a timm ViT",
                     "Chefer, Gur & Wolf, Generic attention-model explainability, ICCV 2021"),
    "vit-attention": ("attention", "Last-layer class-token attention of a timm ViT",
                      "Dosovitskiy et al., An image is worth 16x16 words, ICLR 2021"),
    "vit-gradcam": ("gradcam", "Grad-CAM on the patch tokens of a timm ViT",
                    "Selvaraju et al., Grad-CAM, ICCV 2017 (on ViT tokens)"),
}
for _name, (_kind, _desc, _paper) in _VIT_NAMES.items():
    register_method(_name, explainer=_kind, description=_desc, paper=_paper)(ViTExplainer)
