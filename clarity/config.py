"""CLARiTy's configuration: one flat, validated dataclass; every component is a switch.

Only CLARiTy's abstract is public (arXiv 2512.16700). Everything the abstract does not fix is OUR
choice, marked "ours" here and in docs/clarity.md. The method receives a plain dict (registry
defaults, then preset, then user overrides) and turns it into this dataclass, so a typo in a key
is a clear error instead of a silently ignored option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wsl_bench.stems import PATCH_STEMS

# Named backbones. "s16-224"/"s16-512" are the paper's CLARiTy-S-16-224 and -S-16-512 (ViT-S, patch
# 16). "t16-128" is ours: a 6-block ViT-Tiny at 128 px for the CPU quick preset.
ARCHS: dict[str, dict[str, Any]] = {
    "s16-224": {"backbone": "vit_small_patch16_224", "img_size": 224, "depth": None},
    "s16-512": {"backbone": "vit_small_patch16_224", "img_size": 512, "depth": None},
    "t16-128": {"backbone": "vit_tiny_patch16_224", "img_size": 128, "depth": 6},
    # Tiny test-only backbone (used by the unit tests; not a preset).
    "t16-64-d3": {"backbone": "vit_tiny_patch16_224", "img_size": 64, "depth": 3},
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "head_agg": ("mean", "max"),
    "block_agg": ("mean", "product", "last"),
    "orth_target": ("output", "params"),
    "fusion": ("geomean", "mean", "max", "attention", "segmentcam"),
    "prior": ("auto", "synth", "atlas", "segmenter", "user", "none"),
    "prior_region": ("lungs", "thorax"),
    "distill": ("soft", "token", "none"),
    "dino": ("stage", "file", "none"),
    "lr_schedule": ("cosine", "constant"),
    "patch_stem": PATCH_STEMS,
}


@dataclass
class ClarityConfig:
    """All CLARiTy options. Defaults are the full model; the quick/paper presets change sizes only."""

    # -- backbone ---------------------------------------------------------------------------
    arch: str | None = None  # set by the named configs clarity-s16-224 / clarity-s16-512; wins over preset_arch
    preset_arch: str = "s16-224"  # what the preset picks when the name does not pin an arch
    drop_path: float = 0.1  # ours (DeiT-S default)
    input_size: int | None = None  # ours: side the ViT sees (images are resized to it); None: the arch's own
    # ours: "linear" is ViT's 16x16 patchify; "conv" four stride-2 3x3 convs then a 1x1 (Xiao et al. 2021,
    # "Early convolutions help transformers see better"): same 16-px token grid, learns faster from few images
    patch_stem: str = "linear"
    # -- class tokens and maps (MCTformer-style; K and the aggregation are ours) --------------
    map_blocks: int = 3  # K: class-to-patch attention of the last K blocks
    head_agg: str = "mean"  # how heads are combined
    block_agg: str = "mean"  # how the K blocks are combined ("product" ~ a short rollout of class rows)
    attn_pool: bool = True  # score the class-map-pooled patch feature; False: score the class tokens
    # -- orthogonal class-token loss (formula ours: mean squared off-diagonal cosine) ---------
    orth_weight: float = 0.1
    orth_target: str = "output"  # "output": per-image output class tokens; "params": the learned tokens
    # -- SegmentCAM (architecture and losses ours) ------------------------------------------
    segmentcam: bool = True
    segcam_hidden: int = 128
    segcam_cls_weight: float = 1.0  # BCE on the SegmentCAM branch's pooled, suppressed maps
    fg_weight: float = 1.0  # BCE of the foreground map against the anatomical prior
    bg_weight: float = 0.5  # penalty on class activation outside the prior's foreground
    lse_r: float = 5.0  # log-sum-exp pooling sharpness for SegmentCAM scores
    fusion: str = "geomean"  # how attention and SegmentCAM maps combine into the final map
    suppress: bool = True  # multiply the final map by the predicted foreground probability
    fg_floor: float = 0.3  # ours (dev seed): with suppress, final = fg * (floor + (1 - floor) * fused); 0: fg * fused
    prior: str = "auto"  # auto: batch "lung_mask" when present, else the lung atlas
    prior_path: str | None = None  # user masks: a .npy/.npz atlas or a folder of <image_id>.png
    prior_region: str = "lungs"  # ours: "thorax" fills each row between the lung fields (adds the heart)
    # -- distillation from a ConvNeXtV2 teacher (type, T and weight ours) -------------------
    distill: str = "soft"
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    teacher: str = "convnextv2_atto"
    teacher_epochs: int = 3
    teacher_lr: float = 1e-3
    teacher_batch_size: int = 32
    teacher_input_size: int | None = None  # ours: side the teacher sees; None: the data's image size
    teacher_cache: bool = True  # ours: table the teacher's logits for every training image once, before training
    # -- DINO self-distillation stage (on the training images; all hyper-parameters ours) ----
    dino: str = "stage"
    dino_path: str | None = None  # dino == "file": a local .safetensors / .pth with ViT weights
    dino_epochs: int = 2
    dino_batch_size: int = 32
    dino_lr: float = 5e-4
    dino_out_dim: int = 1024
    dino_local_crops: int = 4
    dino_local_size: int = 64
    dino_global_size: int | None = None  # None: the backbone's input size
    dino_momentum: float = 0.996
    dino_teacher_temp: float = 0.04
    dino_student_temp: float = 0.1
    dino_warmup_frac: float = 0.1  # ours (DINO: 10 of 100 epochs): linear lr warm-up, then cosine decay
    dino_clip: float = 3.0  # gradient-norm clipping, as in DINO
    # -- main training ------------------------------------------------------------------------
    epochs: int = 8  # the cap: training stops earlier when val mean AUROC has not improved for `patience` epochs
    patience: int = 5  # early stopping on the validation mean AUROC (train_module's default)
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    lr_schedule: str = "cosine"  # ours: per-step linear warm-up then cosine decay to 0; or "constant"
    warmup_frac: float = 0.1  # fraction of the training steps spent warming up (cosine schedule)
    explain_batch_size: int = 64

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> "ClarityConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config or {}) - known)
        if unknown:
            raise ValueError(
                f"clarity: unknown config key(s) {unknown}; valid keys: {', '.join(sorted(known))} "
                "(see docs/clarity.md)"
            )
        cfg = cls(**(config or {}))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise ValueError(f"clarity: config {key}={value!r} is not one of {choices}")
        if self.resolved_arch not in ARCHS:
            raise ValueError(f"clarity: arch {self.resolved_arch!r} is not one of {sorted(ARCHS)}")
        if self.input_size is not None and (self.input_size < 16 or self.input_size % 16):
            raise ValueError(f"clarity: input_size={self.input_size} must be a multiple of the patch size 16")
        if not 0.0 <= self.fg_floor < 1.0:
            raise ValueError(f"clarity: fg_floor={self.fg_floor} must be in [0, 1)")
        for key in ("warmup_frac", "dino_warmup_frac"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"clarity: {key}={getattr(self, key)} must be in [0, 1)")
        if self.patience < 1:
            raise ValueError(f"clarity: patience={self.patience} must be >= 1 (epochs without improvement before stopping)")
        if self.map_blocks < 1:
            raise ValueError("clarity: map_blocks (K) must be >= 1")
        if self.dino == "file" and not self.dino_path:
            raise ValueError("clarity: dino='file' needs dino_path, a local file with DINO ViT weights")
        if self.prior == "user" and not self.prior_path:
            raise ValueError("clarity: prior='user' needs prior_path (a .npy/.npz atlas or a folder of masks)")

    @property
    def resolved_arch(self) -> str:
        return self.arch or self.preset_arch

    @property
    def arch_spec(self) -> dict[str, Any]:
        """The named backbone, with `input_size` (when set) as the side the ViT sees."""
        spec = dict(ARCHS[self.resolved_arch])
        if self.input_size is not None:
            spec["img_size"] = int(self.input_size)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
