"""CAN (Ma, Wang, Hoi, MICCAI 2019 / arXiv 2007.10859): cross-attention networks for multi-label thoracic
disease classification, re-implemented under the wsl-bench method protocol.

Known from the paper: two feature extractors whose feature maps gate each other by element-wise (Hadamard)
product, trained with an attention loss and a multi-label balance loss. The paper's formulas are not
available, so these are OUR designs (each a config switch, see docs/can_afloc.md):

- cross-attention (`cross`): both maps projected to `feature_dim` (1x1 conv + BN + ReLU); "product":
  Z = A * B; "gate": Z = A * sigmoid(B) + B * sigmoid(A); "sum": Z = A + B (the ablation without it).
- balance loss (`balance`, `focal_gamma`): per-class positive/negative re-weighting, w+ = 1/(2 p_c),
  w- = 1/(2 (1 - p_c)) with p_c the class's positive fraction (training set or batch), times a focal
  factor (1 - p_t)^gamma that down-weights easy samples. balance="none", gamma=0 is plain BCE.
- attention loss (`w_branch`, `w_agree`): each branch has its own class-map head trained with the balance
  loss (so each attention map is class-discriminative), and for each positive (image, class) the two
  branches' rectified class maps are pulled together (1 - cosine), so the product keeps shared evidence.

Heatmaps: class activation maps of the cross-attended map Z with the classifier weights (CAM; with average
pooling the logit is exactly the mean of the map).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsl_bench.checkpoints import load_checkpoint, save_checkpoint
from wsl_bench.labels import FINDINGS
from wsl_bench.methods import FitContext, Method, register_method

CHECKPOINT = "can"  # the wsl_bench.checkpoints pair can.safetensors + can.json


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def class_balance_weights(pos_frac: torch.Tensor, max_weight: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (w_pos, w_neg) = (1/(2p), 1/(2(1-p))), clipped to [0, max_weight]: each class's positives
    and negatives carry equal total weight, and a balanced class (p = 0.5) gets weight 1 on both."""
    p = pos_frac.clamp(1e-6, 1 - 1e-6)
    return (0.5 / p).clamp(max=max_weight), (0.5 / (1 - p)).clamp(max=max_weight)


def balance_loss(logits: torch.Tensor, labels: torch.Tensor, pos_frac: torch.Tensor | None = None,
                 gamma: float = 2.0, mode: str = "dataset", max_weight: float = 20.0) -> torch.Tensor:
    """Multi-label balance loss (our design): class-balanced, focal-weighted binary cross-entropy.

    mode "dataset": `pos_frac` [C] from the training labels; "batch": from this batch (Laplace-smoothed);
    "none": weight 1. The mean is over all (image, class) entries.
    """
    labels = labels.float()
    logits = logits.float()
    if mode == "dataset":
        if pos_frac is None:
            raise ValueError("balance mode 'dataset' needs pos_frac (the training set's positive fractions)")
        w_pos, w_neg = class_balance_weights(pos_frac.to(logits), max_weight)
    elif mode == "batch":
        frac = (labels.sum(0) + 1) / (labels.shape[0] + 2)
        w_pos, w_neg = class_balance_weights(frac, max_weight)
    elif mode == "none":
        w_pos = w_neg = torch.ones(logits.shape[1], dtype=logits.dtype, device=logits.device)
    else:
        raise ValueError(f"balance mode {mode!r}; use 'dataset', 'batch' or 'none'")
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos = w_pos * (1 - p).pow(gamma) * log_p
    neg = w_neg * p.pow(gamma) * log_q
    return -(labels * pos + (1 - labels) * neg).mean()


def attention_agreement_loss(maps_a: torch.Tensor, maps_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over positive (image, class) of 1 - cos(relu(map_a), relu(map_b)); 0 when a batch has no positive."""
    a = F.relu(maps_a.float()).flatten(2)
    b = F.relu(maps_b.float()).flatten(2)
    cos = F.cosine_similarity(a, b, dim=-1, eps=1e-8)  # [B,C]
    pos = labels.float() > 0.5
    if not pos.any():
        return cos.sum() * 0.0
    return (1 - cos)[pos].mean()


# ---------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------
def _load_backbone(body: nn.Module, path: str | None) -> None:
    if path:
        from baselines.afloc import load_backbone_weights

        load_backbone_weights(body, path)


class CANNet(nn.Module):
    """Two timm CNNs whose projected feature maps gate each other; per-class maps by 1x1 conv heads."""

    def __init__(self, backbone_a: str = "densenet121", backbone_b: str = "resnet50", feature_dim: int = 512,
                 cross: str = "product", output_stride: int = 32, weights_a: str | None = None,
                 weights_b: str | None = None, dropout: float = 0.0,
                 channels_a: Sequence[int] | None = None, channels_b: Sequence[int] | None = None):
        super().__init__()
        import timm

        if cross not in {"product", "gate", "sum"}:
            raise ValueError(f"can cross={cross!r}; use 'product', 'gate' or 'sum' (no cross-attention)")
        self.cross = cross
        kwargs: dict[str, Any] = {"pretrained": False, "features_only": True, "out_indices": (-1,), "in_chans": 1}
        bodies = []
        for name, weights, channels in ((backbone_a, weights_a, channels_a), (backbone_b, weights_b, channels_b)):
            extra: dict[str, Any] = {"output_stride": output_stride} if output_stride != 32 else {}
            if channels:  # timm ResNet stage widths (slimmer extractors for the CPU preset)
                extra["channels"] = tuple(channels)
            body = timm.create_model(name, **kwargs, **extra)
            _load_backbone(body, weights)
            bodies.append(body)
        self.body_a, self.body_b = bodies

        def proj(c: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, feature_dim, 1, bias=False), nn.BatchNorm2d(feature_dim),
                                 nn.ReLU(inplace=True))

        self.proj_a = proj(self.body_a.feature_info.channels()[-1])
        self.proj_b = proj(self.body_b.feature_info.channels()[-1])
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        c = len(FINDINGS)
        self.head = nn.Conv2d(feature_dim, c, 1)
        self.head_a = nn.Conv2d(feature_dim, c, 1)
        self.head_b = nn.Conv2d(feature_dim, c, 1)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, B, Z): the two projected maps and their cross-attended fusion."""
        x = (images - 0.5) / 0.25
        a = self.proj_a(self.body_a(x)[-1])
        b = self.proj_b(self.body_b(x)[-1])
        if b.shape[-2:] != a.shape[-2:]:
            b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
        if self.cross == "product":
            z = a * b
        elif self.cross == "gate":
            z = a * torch.sigmoid(b) + b * torch.sigmoid(a)
        else:  # "sum": the ablation without cross-attention
            z = a + b
        return a, b, z

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        a, b, z = self.features(images)
        cam = self.head(self.dropout(z))
        cam_a, cam_b = self.head_a(a), self.head_b(b)
        return {"logits": cam.mean((2, 3)), "cam": cam, "cam_a": cam_a, "cam_b": cam_b,
                "logits_a": cam_a.mean((2, 3)), "logits_b": cam_b.mean((2, 3))}


def can_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, cfg: dict[str, Any],
             pos_frac: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total CAN loss: balance loss on the fused logits + attention loss (branch supervision + agreement)."""
    bal = lambda lg: balance_loss(lg, labels, pos_frac, cfg["focal_gamma"], cfg["balance"],  # noqa: E731
                                  cfg["max_weight"])
    main = bal(outputs["logits"])
    loss, logs = main, {"balance": main.detach()}
    if cfg["w_branch"] > 0:
        branch = 0.5 * (bal(outputs["logits_a"]) + bal(outputs["logits_b"]))
        loss = loss + cfg["w_branch"] * branch
        logs["branch"] = branch.detach()
    if cfg["w_agree"] > 0:
        agree = attention_agreement_loss(outputs["cam_a"], outputs["cam_b"], labels)
        loss = loss + cfg["w_agree"] * agree
        logs["agree"] = agree.detach()
    return loss, logs


def build_can_module(net: CANNet, cfg: dict[str, Any], pos_frac: torch.Tensor):
    """A ClassifierModule whose loss is the CAN loss (built lazily: importing this file needs no harness)."""
    from wsl_bench.training.module import ClassifierModule

    class CANModule(ClassifierModule):
        def __init__(self):
            super().__init__(net, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
            self.register_buffer("pos_frac", pos_frac.float(), persistent=False)
            self.cfg = cfg

        def compute_loss(self, batch, outputs):
            return can_loss(outputs, batch["labels"], self.cfg, self.pos_frac)

    return CANModule()


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------
_DEFAULTS: dict[str, Any] = {
    "backbone_a": "densenet121",
    "backbone_b": "resnet50",
    "weights_a": None,  # local state dict files (ImageNet weights) for each extractor
    "weights_b": None,
    "channels_a": None,  # timm ResNet stage widths, e.g. [32, 64, 128, 256] (slim extractors)
    "channels_b": None,
    "feature_dim": 512,
    "output_stride": 32,
    "cross": "product",
    "dropout": 0.0,
    "balance": "dataset",
    "focal_gamma": 2.0,
    "max_weight": 20.0,
    "w_branch": 0.5,
    "w_agree": 0.1,
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "max_epochs": 20,
    "batch_size": 32,
    "patience": 5,  # early stopping on validation mean AUROC (epochs without improvement)
}


@register_method("can", **_DEFAULTS)
class CAN(Method):
    """CAN: two CNNs cross-attending by Hadamard product, attention + multi-label balance losses."""

    description = "CAN: cross-attention (Hadamard product) of two CNNs with attention and balance losses"
    paper = "Ma, Wang, Hoi, Multi-label thoracic disease classification with cross-attention networks (MICCAI 2019)"
    config_keys: ClassVar[dict[str, Any]] = dict(_DEFAULTS)  # the keys (and types) `--set` accepts
    presets = {
        "quick": {"backbone_a": "resnet18", "backbone_b": "resnet18", "channels_a": [16, 32, 64, 128],
                  "channels_b": [16, 32, 64, 128], "feature_dim": 64, "output_stride": 16,
                  "lr": 2e-3, "weight_decay": 1e-4, "max_epochs": 2, "batch_size": 32},
        # the quick network at 224 px (stride 16: 14x14 maps), at most 20 epochs, early stopping after 3 flat epochs
        "standard": {"backbone_a": "resnet18", "backbone_b": "resnet18", "channels_a": [16, 32, 64, 128],
                     "channels_b": [16, 32, 64, 128], "feature_dim": 64, "output_stride": 16,
                     "lr": 2e-3, "weight_decay": 1e-4, "max_epochs": 20, "batch_size": 32, "patience": 3},
        "paper": {},
    }
    ablations = {
        "attention_loss": {"w_branch": 0.0, "w_agree": 0.0},
        "balance_loss": {"balance": "none", "focal_gamma": 0.0},
        "cross_attention": {"cross": "sum"},
    }

    def __init__(self, config=None, device="cpu"):
        super().__init__({**_DEFAULTS, **(config or {})}, device)
        unknown = set(self.config) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown can config keys {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
        self.net: CANNet | None = None

    def build(self) -> CANNet:
        c = self.config
        self.net = CANNet(c["backbone_a"], c["backbone_b"], c["feature_dim"], c["cross"], c["output_stride"],
                          c["weights_a"], c["weights_b"], c["dropout"], c["channels_a"],
                          c["channels_b"]).to(self.device)
        return self.net

    def init_untrained(self) -> None:
        if self.net is None:
            self.build()

    def fit(self, train, val, ctx: FitContext) -> None:
        from wsl_bench.training import train_module

        torch.manual_seed(ctx.seed)
        net = self.build()
        pos_frac = torch.as_tensor(np.asarray(train.labels, dtype=np.float32).mean(0))
        module = build_can_module(net, self.config, pos_frac)
        train_module(module, train, val, ctx, max_epochs=self.config["max_epochs"],
                     batch_size=self.config["batch_size"], patience=int(self.config["patience"]))
        self.net = module.net.to(self.device).eval()
        self.save(ctx.checkpoint_dir)

    def save(self, directory: Path) -> None:
        if self.net is None:
            raise RuntimeError("can has no trained network to save; call fit or load first")
        save_checkpoint(directory, self.net.state_dict(), {"config": self.config}, CHECKPOINT)

    def load(self, directory: Path) -> None:
        state, meta = load_checkpoint(directory, CHECKPOINT, kind="a CAN checkpoint",
                                      fix="fit can first (CAN.save writes can.safetensors and can.json)",
                                      legacy_meta="can.json")
        self.config = {**meta["config"], "weights_a": None, "weights_b": None}
        self.build().load_state_dict(state)
        self.net.eval()

    def _net(self) -> CANNet:
        if self.net is None:
            raise RuntimeError("can is not trained: call fit(...) or load(checkpoint_dir) first")
        return self.net.eval()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._net()(images.to(self.device))["logits"])

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        return self._net()(images.to(self.device))["cam"][:, list(classes)]
