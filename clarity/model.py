"""The CLARiTy network: a timm ViT with 14 class tokens, class-attention maps, attention pooling,
an optional distillation token and the SegmentCAM head.

One forward pass yields, for every image, all 14 class maps (class-to-patch attention of the last
K blocks), the class logits, and SegmentCAM's maps and foreground. The attention of the last K
blocks is computed explicitly for the class-token rows only (14 x N per head, cheap); the block
output still comes from timm's fused attention, so the rest of the network runs at timm speed.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from wsl_bench.labels import FINDINGS
from wsl_bench.stems import set_patch_stem

from .config import ClarityConfig
from .segmentcam import SegmentCAM

N_CLASSES = len(FINDINGS)


def build_backbone(cfg: ClarityConfig) -> nn.Module:
    """A timm ViT (pretrained=False: offline) without class token or head; grayscale input."""
    spec = cfg.arch_spec
    kwargs: dict[str, Any] = dict(
        pretrained=False,
        num_classes=0,
        class_token=False,
        global_pool="avg",
        img_size=spec["img_size"],
        in_chans=1,
        dynamic_img_size=True,
        drop_path_rate=cfg.drop_path,
    )
    if spec.get("depth"):
        kwargs["depth"] = spec["depth"]
    vit = timm.create_model(spec["backbone"], **kwargs)
    return set_patch_stem(vit, cfg.patch_stem)


def class_row_attention(attn: nn.Module, x: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """timm `Attention.forward` on normed tokens `x`, also returning the softmax attention of the
    first `n_rows` query tokens: ([B,N,D] output, [B,heads,n_rows,N] attention)."""
    B, N, C = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    rows = ((q[:, :, :n_rows] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = out.transpose(1, 2).reshape(B, N, -1)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out)), rows


def aggregate_maps(rows: list[torch.Tensor], n_cls: int, n_prefix: int, head_agg: str, block_agg: str) -> torch.Tensor:
    """Class-to-patch attention [B,K,heads,n_prefix,N] -> class maps [B,n_cls,P] (P patches).

    Each block's class-to-patch attention is renormalised over patches (it also attends to the
    other prefix tokens), combined over heads, then over the K blocks.
    """
    a = torch.stack(rows, dim=1)[:, :, :, :n_cls, n_prefix:]  # [B,K,H,C,P]
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
    a = a.mean(2) if head_agg == "mean" else a.amax(2)  # [B,K,C,P]
    if block_agg == "mean":
        m = a.mean(1)
    elif block_agg == "last":
        m = a[:, -1]
    else:  # product: geometric mean over blocks, renormalised
        m = a.clamp_min(1e-12).log().mean(1).exp()
    return m / m.sum(-1, keepdim=True).clamp_min(1e-12)


def embed_patches(vit: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Normalised [B,1,H,W] -> patch tokens plus positions [B,P,D] and the grid (gh, gw); positional
    embeddings are resampled when the grid differs from the model's (DINO crops, 224 -> 512 files)."""
    x = vit.patch_embed(images)  # NHWC (dynamic_img_size)
    B, gh, gw, D = x.shape
    pos = vit.pos_embed
    if (gh, gw) != tuple(vit.patch_embed.grid_size):
        pos = resample_abs_pos_embed(pos, [gh, gw], list(vit.patch_embed.grid_size), num_prefix_tokens=0)
    return vit.pos_drop(x.reshape(B, gh * gw, D) + pos), (gh, gw)


def encode_image(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Plain ViT image embedding without class tokens (the DINO stage): mean of normed patch tokens."""
    x, _ = embed_patches(vit, normalize(images))
    return vit.norm(vit.blocks(x)).mean(1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Fixed input normalisation of [0,1] grayscale images (no dataset statistics needed)."""
    return (images - 0.5) / 0.25


class ClarityNet(nn.Module):
    """ViT with 14 class tokens (+ optional distillation token) and a SegmentCAM head.

    `forward(images)` returns a dict: logits [B,14] (with a distillation token: the mean of the
    class and distillation heads, DeiT-style), cls_logits, dist_logits (or None), class_maps
    [B,14,g,g] (attention, sums to 1 per map), class_tokens [B,14,D], and, with SegmentCAM,
    seg_maps [B,14,g,g] (logits), fg_logits [B,1,g,g], seg_logits [B,14].
    """

    def __init__(self, cfg: ClarityConfig):
        super().__init__()
        self.cfg = cfg
        self.vit = build_backbone(cfg)
        dim = self.vit.embed_dim
        self.img_size = cfg.arch_spec["img_size"]
        self.patch = self.vit.patch_embed.patch_size[0]
        self.depth = len(self.vit.blocks)
        if cfg.map_blocks > self.depth:
            raise ValueError(f"clarity: map_blocks={cfg.map_blocks} exceeds the backbone depth {self.depth}")
        self.n_dist = 1 if cfg.distill == "token" else 0
        self.n_prefix = N_CLASSES + self.n_dist
        self.class_tokens = nn.Parameter(torch.randn(1, N_CLASSES, dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if self.n_dist else None
        # Per-class linear scorers: w_c . feature_c + b_c (ours; MCTformer averages the token instead).
        self.cls_weight = nn.Parameter(torch.randn(N_CLASSES, dim) * 0.02)
        self.cls_bias = nn.Parameter(torch.zeros(N_CLASSES))
        self.dist_head = nn.Linear(dim, N_CLASSES) if self.n_dist else None
        self.segmentcam = SegmentCAM(dim, cfg.segcam_hidden, N_CLASSES, cfg.lse_r) if cfg.segmentcam else None

    # -- backbone pieces ------------------------------------------------------------------------
    def load_backbone(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load ViT weights, interpolating positional embeddings to this model's grid (e.g. 224->512)."""
        state = dict(state)
        for prefix in ("module.", "backbone.", "student.", "vit."):
            if any(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "pos_embed" in state:
            pe = state["pos_embed"]
            n_pos = self.vit.pos_embed.shape[1]
            if pe.shape[1] != n_pos:
                n_old = pe.shape[1]
                extra = n_old - int(round(n_old**0.5)) ** 2  # DINO/timm files carry a cls position
                old = int(round((n_old - extra) ** 0.5))
                new = self.vit.patch_embed.grid_size
                state["pos_embed"] = resample_abs_pos_embed(pe[:, extra:], list(new), [old, old], num_prefix_tokens=0)
        if "patch_embed.proj.weight" in state and state["patch_embed.proj.weight"].shape[1] == 3:
            state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].sum(1, keepdim=True)
        own = self.vit.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in usable]
        if len(usable) < len(own) // 2:
            raise ValueError(
                f"clarity: {source} does not hold weights for this ViT ({self.cfg.resolved_arch}): "
                f"{len(usable)}/{len(own)} tensors match; first missing: {missing[:5]}"
            )
        self.vit.load_state_dict(usable, strict=False)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return embed_patches(self.vit, images)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"clarity: images must be [B,1,H,W] grayscale, got {tuple(images.shape)}")
        if images.shape[-1] != self.img_size or images.shape[-2] != self.img_size:
            images = F.interpolate(images, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return normalize(images)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        cfg = self.cfg
        x, (gh, gw) = self.embed(self.prepare(images))
        B = x.shape[0]
        prefix = [self.class_tokens.expand(B, -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(B, -1, -1))
        x = torch.cat(prefix + [x], dim=1)
        rows = []
        first_map_block = self.depth - cfg.map_blocks
        for i, blk in enumerate(self.vit.blocks):
            if i < first_map_block:
                x = blk(x)
                continue
            attn_out, a = class_row_attention(blk.attn, blk.norm1(x), self.n_prefix)
            rows.append(a)
            x = x + blk.drop_path1(blk.ls1(attn_out))
            x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        x = self.vit.norm(x)
        tokens, patches = x[:, :N_CLASSES], x[:, self.n_prefix:]
        maps = aggregate_maps(rows, N_CLASSES, self.n_prefix, cfg.head_agg, cfg.block_agg)  # [B,C,P]
        feats = torch.einsum("bcp,bpd->bcd", maps, patches) if cfg.attn_pool else tokens
        cls_logits = (feats * self.cls_weight).sum(-1) + self.cls_bias
        out: dict[str, torch.Tensor | None] = {
            "cls_logits": cls_logits,
            "class_maps": maps.reshape(B, N_CLASSES, gh, gw),
            "class_tokens": tokens,
            "dist_logits": None,
        }
        if self.dist_head is not None:
            out["dist_logits"] = self.dist_head(x[:, N_CLASSES])
            out["logits"] = (cls_logits + out["dist_logits"]) / 2
        else:
            out["logits"] = cls_logits
        if self.segmentcam is not None:
            grid = patches.transpose(1, 2).reshape(B, -1, gh, gw)
            out.update(self.segmentcam(grid))
        return out
