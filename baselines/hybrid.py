"""A CNN-ViT hybrid in the spirit of Li et al. 2022 ("Modeling long-range dependencies for weakly
supervised disease classification and localization on chest X-ray"): a timm ResNet trunk
(stages 1-3, stride 16) whose feature map is embedded as tokens for a transformer encoder
(timm's `HybridEmbed` + `VisionTransformer`, as in timm's R50+ViT hybrids). Explained with
Grad-CAM (on the last block's tokens or on the CNN feature map) and with (gradient) rollout.

Li et al.'s exact trunk, depth and head are not known to us; the sizes below are our choice
(ResNet-18 trunk + 4 blocks of width 192 for CPU, ResNet-50 trunk + ViT-S for the paper preset).
"""

from __future__ import annotations

from functools import partial
import timm
from timm.layers import HybridEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from baselines._backbones import GrayscaleNet, load_local_weights
from baselines.vit import ViTExplainer
from wsl_bench.labels import NUM_FINDINGS
from wsl_bench.methods import register_method


def build_hybrid(
    cnn: str,
    image_size: int,
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    cnn_stage: int = 3,
    drop_path_rate: float = 0.0,
    weights: str | None = None,
) -> VisionTransformer:
    """timm ViT whose patch embedding is a CNN trunk's stage `cnn_stage` (1x1 token projection)."""
    trunk = timm.create_model(cnn, pretrained=False, in_chans=1, features_only=True, out_indices=(cnn_stage,))
    model = VisionTransformer(
        img_size=image_size,
        patch_size=1,
        in_chans=1,
        num_classes=NUM_FINDINGS,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        embed_layer=partial(HybridEmbed, backbone=trunk),
        drop_path_rate=drop_path_rate,
        dynamic_img_size=True,
    )
    if weights:
        load_local_weights(model, weights)
    return model


@register_method("hybrid-gradcam", explainer="gradcam",
                 description="Grad-CAM on a CNN-ViT hybrid (ResNet trunk + transformer) trained on the cohort")
@register_method("hybrid-rollout", explainer="rollout",
                 description="Attention rollout on a CNN-ViT hybrid (ResNet trunk + transformer)")
@register_method("hybrid-grad-rollout", explainer="grad-rollout",
                 description="Gradient-weighted rollout (Chefer 2021) on a CNN-ViT hybrid")
class HybridExplainer(ViTExplainer):
    """CNN-ViT hybrid (Li et al. 2022 in spirit) explained by Grad-CAM or (gradient) rollout."""

    paper = "Li et al., Modeling long-range dependencies for WSL on chest X-ray, QIMS 2022"
    base_defaults = {
        **ViTExplainer.base_defaults,
        "arch": "resnet18",  # the CNN trunk
        "cnn_stage": 3,
        "embed_dim": 192,
        "depth": 4,
        "num_heads": 3,
        "lr": 5e-4,
        "weight_decay": 0.05,
        # Grad-CAM target: "last_norm1" (tokens entering the last block) or "cnn" (the trunk's map)
        "gradcam_layer": "last_norm1",
    }
    train_keys = ("arch", "weights", "lr", "weight_decay", "max_epochs", "batch_size", "patience", "pos_weight",
                  "warmup_frac", "cnn_stage", "embed_dim", "depth", "num_heads", "drop_path_rate")
    presets = {
        "quick": {"arch": "resnet18", "embed_dim": 192, "depth": 4, "num_heads": 3, "max_epochs": 2,
                  "batch_size": 32, "lr": 5e-4},
        # ResNet-18 trunk to stage 3 (stride 16): 14x14 tokens at 224 px; its transformer blocks warm up as
        # CLARiTy's do (10 % warm-up + cosine)
        "standard": {"arch": "resnet18", "embed_dim": 192, "depth": 4, "num_heads": 3, "warmup_frac": 0.1,
                     "max_epochs": 20, "batch_size": 32, "lr": 5e-4, "patience": 3},
        "paper": {"arch": "resnet50", "embed_dim": 384, "depth": 12, "num_heads": 6, "max_epochs": 30,
                  "batch_size": 32, "lr": 1e-4, "drop_path_rate": 0.1, "patience": 5, "explain_batch_size": 8,
                  "class_chunk": 4},
    }

    def share_family(self) -> str:
        return "hybrid"

    def build_net(self) -> nn.Module:
        if self.config["arch"] not in timm.list_models():
            raise ValueError(f"unknown timm CNN trunk {self.config['arch']!r} (config key 'arch')")
        return GrayscaleNet(
            build_hybrid(
                self.config["arch"],
                int(self.image_size),
                embed_dim=int(self.config["embed_dim"]),
                depth=int(self.config["depth"]),
                num_heads=int(self.config["num_heads"]),
                cnn_stage=int(self.config["cnn_stage"]),
                drop_path_rate=float(self.config.get("drop_path_rate") or 0.0),
                weights=self.config.get("weights"),
            )
        )

    def gradcam_target(self) -> nn.Module:
        if self.config.get("gradcam_layer") == "cnn":
            return list(self.vit.patch_embed.backbone.children())[-1]  # the trunk's last stage
        return super().gradcam_target()

    def gradcam_reshape(self, h: int, w: int):
        if self.config.get("gradcam_layer") == "cnn":
            return None  # already a [B,K,h,w] map
        return super().gradcam_reshape(h, w)
