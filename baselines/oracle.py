"""`oracle-seg`: the fully supervised ceiling of the benchmark.

The priors in `baselines.priors` are the floor (a guess that looks at no pixel); `oracle-seg` is the
ceiling: a compact U-Net trained on SynthCXR's exact lesion masks (pixel labels no weakly-supervised
method sees), one sigmoid map per box finding, BCE + soft Dice. A weakly-supervised method is read
between the two. Only SynthCXR has such masks: on NIH (or any split without `lesion_masks`) `fit`
refuses with one line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsl_bench.checkpoints import load_checkpoint, save_checkpoint
from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS, NUM_FINDINGS
from wsl_bench.methods import FitContext, Method, register_method
from wsl_bench.training import ClassifierModule

CHECKPOINT = "model"  # the wsl_bench.checkpoints pair WEIGHTS_FILE + STATE_FILE
WEIGHTS_FILE, STATE_FILE = "model.safetensors", "model.json"
LEGACY_STATE_FILE = "oracle.json"  # the unsealed JSON older versions wrote; still read
N_BOX = len(BOX_FINDINGS)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers (the U-Net unit)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class SegUNet(nn.Module):
    """A compact U-Net: optional strided stem, one level per width (max-pool down, bilinear up + skip),
    a 1x1 head giving `n_out` logit maps at 1/`stem_stride` of the input side."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 64), stem_stride: int = 2, n_out: int = N_BOX,
                 head_bias: float = 0.0):
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"oracle-seg: 'widths' must be a non-empty list of positive ints, got {widths}")
        if int(stem_stride) not in (1, 2, 4):
            raise ValueError(f"oracle-seg: 'stem_stride' must be 1, 2 or 4, got {stem_stride}")
        self.stem_stride = int(stem_stride)
        if self.stem_stride > 1:  # one stride-2 conv per factor of 2 (the first at half width)
            n = self.stem_stride.bit_length() - 1
            chans = [1] + [max(1, widths[0] // 2)] * (n - 1) + [widths[0]]
            self.stem = nn.Sequential(*[
                layer for a, b in zip(chans[:-1], chans[1:])
                for layer in (nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            ])
            first = widths[0]
        else:
            self.stem = nn.Identity()
            first = 1
        self.down = nn.ModuleList(_block(first if i == 0 else widths[i - 1], w) for i, w in enumerate(widths))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], n_out, 1)
        nn.init.constant_(self.head.bias, float(head_bias))  # start near the (small) pixel prevalence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skip], 1))
        return self.head(x)


def resize_images(images: torch.Tensor, side: int) -> torch.Tensor:
    """[B,1,H,W] -> [B,1,side,side]: area averaging when shrinking, bilinear otherwise (fit and explain share it)."""
    if tuple(images.shape[-2:]) == (side, side):
        return images
    mode = "area" if images.shape[-1] > side and images.shape[-2] > side else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images.float(), size=(side, side), mode=mode, **kw)


def output_side(input_side: int, stem_stride: int) -> int:
    """Side of the logit maps for a given input side (each stride-2 stem conv: kernel 3, padding 1)."""
    side = int(input_side)
    for _ in range(int(stem_stride).bit_length() - 1):
        side = (side - 1) // 2 + 1
    return side


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice per class over the whole batch (images pooled), averaged over classes.

    Pooling the batch keeps the loss defined when a class is absent from an image; the smoothing term
    makes a class absent from the whole batch push its map towards zero.
    """
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


class _MaskSplit(torch.utils.data.Dataset):
    """Images at the model input side with per-class lesion-mask targets at the output side (in memory);
    with the auxiliary lung target a 9th mask channel holds the lung field."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, labels: np.ndarray):
        self.images, self.masks = images, masks  # float [N,1,s,s], uint8 [N,8(+1),m,m] (area fraction * 255)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "mask": self.masks[i], "labels": self.labels[i], "index": int(i)}


class _SegModule(ClassifierModule):
    """Pixel-supervised training: BCE + `dice_weight` x soft Dice on the 8 lesion-mask targets, plus
    `aux_lung` x (BCE + Dice) on the lung field when the net has that 9th output.

    `logits_of` gives the harness's [B,14] view (spatial max of each box finding's logit map, 0 for the
    other six), so the inherited validation also logs a mean AUROC; checkpoints are chosen by `val_loss`.
    """

    def __init__(self, net: nn.Module, lr: float, weight_decay: float, dice_weight: float, warmup_frac: float,
                 aux_lung: float = 0.0):
        super().__init__(net, lr=lr, weight_decay=weight_decay, warmup_frac=warmup_frac)
        self.dice_weight = float(dice_weight)
        self.aux_lung = float(aux_lung)

    def logits_of(self, outputs: torch.Tensor) -> torch.Tensor:
        out = outputs.new_zeros(outputs.shape[0], NUM_FINDINGS)
        out[:, list(BOX_FINDING_INDICES)] = outputs[:, :N_BOX].amax(dim=(2, 3))
        return out

    def compute_loss(self, batch: dict, outputs: torch.Tensor):
        logits = outputs.float()
        target = batch["mask"].float() / 255.0
        bce = F.binary_cross_entropy_with_logits(logits[:, :N_BOX], target[:, :N_BOX])
        dice = soft_dice_loss(torch.sigmoid(logits[:, :N_BOX]), target[:, :N_BOX])
        loss, logs = bce + self.dice_weight * dice, {"bce": bce.detach(), "dice": dice.detach()}
        if logits.shape[1] > N_BOX:
            lung_logits, lung = logits[:, N_BOX:], target[:, N_BOX:]
            lung_loss = F.binary_cross_entropy_with_logits(lung_logits, lung) + soft_dice_loss(torch.sigmoid(lung_logits), lung)
            loss = loss + self.aux_lung * lung_loss
            logs["lung"] = lung_loss.detach()
        return loss, logs


@register_method("oracle-seg", paper="Ceiling reference: supervised segmentation on exact lesion masks")
class OracleSeg(Method):
    """Fully supervised ceiling: a compact U-Net trained on SynthCXR's exact lesion masks (not weak labels)."""

    trainable = True
    supervision: ClassVar[str] = "masks"
    defaults: ClassVar[dict[str, Any]] = {
        "widths": [16, 32, 64, 64],  # channels per U-Net level (len = number of levels)
        "stem_stride": 4,  # strided stem: maps at 1/stem_stride of the input side (cheaper, coarser)
        "max_input_size": 128,  # images larger than this are area-downsampled to it (None: as given)
        "lr": 1e-2,
        "weight_decay": 1e-4,
        "warmup_frac": 0.05,  # linear warm-up share of the steps, then cosine decay
        "dice_weight": 1.0,  # loss = BCE + dice_weight * soft Dice
        # weight of an auxiliary 9th output trained on the lung field (0: off). Effusion and pneumothorax
        # are defined against the lung's extent, which the lung target teaches; explain never shows it.
        "aux_lung": 1.0,
        "head_bias": -4.0,  # initial logit of every map (sigmoid ~0.02: lesions cover few pixels)
        # share of lesion-free training images kept (all lesion images are): maps are scored only where a
        # box is, and the other classes' lesions already teach each map where its finding is not
        "negatives": 0.0,
        "max_epochs": 8,
        "batch_size": 32,
        "patience": 3,
        "explain_batch_size": 64,
    }
    config_keys: ClassVar[dict[str, Any]] = dict(defaults)  # the keys (and types) `--set methods.oracle-seg.*` accepts
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # SynthCXR at 128 px on CPU: full 128-px input through a stride-4 stem, 32x32 maps, ~0.3 M parameters.
        "quick": {"widths": [16, 32, 64, 64], "stem_stride": 4, "max_input_size": 128, "max_epochs": 8,
                  "batch_size": 32, "lr": 1e-2, "negatives": 0.0, "aux_lung": 1.0},
        # SynthCXR at 224 px: the quick network on the full 224-px input (56x56 maps), trained until the
        # validation loss stops improving (patience 3, at most 30 epochs).
        "standard": {"widths": [16, 32, 64, 64], "stem_stride": 4, "max_input_size": 224, "max_epochs": 30,
                     "batch_size": 32, "lr": 1e-2, "patience": 3, "negatives": 0.0, "aux_lung": 1.0},
        # SynthCXR at full size on a GPU (NIH has no lesion masks: fit refuses there).
        "paper": {"widths": [32, 64, 128, 256], "stem_stride": 2, "max_input_size": 256, "max_epochs": 30,
                  "batch_size": 32, "lr": 3e-3, "patience": 5, "negatives": 1.0, "aux_lung": 1.0},
    }
    # What shapes the network: read back from the checkpoint on load, so weights always fit.
    net_keys: ClassVar[tuple[str, ...]] = ("widths", "stem_stride")

    def __init__(self, config: dict[str, Any] | None = None, device: str | torch.device = "cpu"):
        super().__init__({**self.defaults, **(config or {})}, device)
        self.net: SegUNet | None = None
        self.n_out = N_BOX + (1 if float(self.config.get("aux_lung") or 0) > 0 else 0)
        self.input_size: int | None = None
        self.prevalence = np.full(NUM_FINDINGS, 0.5, dtype=np.float64)
        self.fit_info: dict[str, Any] = {}

    # -- network ----------------------------------------------------------------------------
    def build(self) -> SegUNet:
        """A fresh (untrained) network from the config."""
        self.net = SegUNet(self.config["widths"], int(self.config["stem_stride"]), self.n_out,
                           float(self.config.get("head_bias") or 0.0)).to(self.device)
        return self.net

    def ensure_net(self) -> SegUNet:
        return self.net if self.net is not None else self.build()

    def _input_side(self, image_side: int) -> int:
        cap = self.config.get("max_input_size")
        return int(image_side) if not cap else min(int(image_side), int(cap))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        side = self.input_size or self._input_side(images.shape[-1])
        return resize_images(images.to(self.device, torch.float32), side)

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, train, val, ctx: FitContext) -> None:
        from wsl_bench.training import train_module

        _require_masks(train)
        started = time.perf_counter()
        image_side = int(getattr(train, "image_size", None) or ctx.image_size)
        self.input_size = self._input_side(image_side)
        self.prevalence = np.asarray(train.labels, dtype=np.float64).mean(axis=0) if len(train) else self.prevalence
        out_side = output_side(self.input_size, int(self.config["stem_stride"]))
        aux = float(self.config.get("aux_lung") or 0)
        self.n_out = N_BOX + (1 if aux > 0 and hasattr(train, "load_lung_masks") else 0)
        rng = np.random.default_rng(ctx.seed)
        train_set = self._mask_split(train, out_side, rng)
        usable_val = hasattr(val, "lesion_masks") and len(val) and (self.n_out == N_BOX or hasattr(val, "load_lung_masks"))
        val_set = self._mask_split(val, out_side, rng) if usable_val else train_set
        torch.manual_seed(ctx.seed)
        net = self.build().cpu()
        module = _SegModule(net, lr=float(self.config["lr"]), weight_decay=float(self.config["weight_decay"]),
                            dice_weight=float(self.config["dice_weight"]), warmup_frac=float(self.config["warmup_frac"]),
                            aux_lung=aux)
        train_module(module, train_set, val_set, ctx, max_epochs=int(self.config["max_epochs"]),
                     batch_size=int(self.config["batch_size"]), monitor="val_loss", mode="min",
                     patience=int(self.config["patience"]))
        self.net = module.net.to(self.device).eval()
        self.fit_info = {"trained": True, "max_epochs": ctx.extra.get("fit_max_epochs"),
                         "batch_size": ctx.extra.get("fit_batch_size"), "n_train": len(train_set),
                         "n_val": len(val_set), "fit_s": round(time.perf_counter() - started, 3)}
        self.save(ctx.checkpoint_dir)

    def _mask_split(self, split, out_side: int, rng: np.random.Generator) -> _MaskSplit:
        """Every image with a lesion plus a `negatives` share of the others, as tensors at the model's sides."""
        masks = [split.lesion_masks(i) for i in range(len(split))]  # fit-time only, once per split
        has = np.array([any(m.any() for m in d.values()) for d in masks], dtype=bool)
        neg = np.flatnonzero(~has)
        keep_neg = rng.permutation(neg)[: int(round(float(self.config["negatives"]) * len(neg)))]
        rows = np.sort(np.concatenate([np.flatnonzero(has), keep_neg])).astype(np.int64)
        images = torch.cat([resize_images(split.load_images(rows[s : s + 256]), self.input_size)
                            for s in range(0, len(rows), 256)]) if len(rows) else torch.zeros(0, 1, 1, 1)
        targets = torch.zeros(len(rows), self.n_out, out_side, out_side, dtype=torch.uint8)
        if self.n_out > N_BOX:  # the lung field, the auxiliary target
            for s in range(0, len(rows), 256):
                lung = F.adaptive_avg_pool2d(split.load_lung_masks(rows[s : s + 256]).float(), out_side)
                targets[s : s + 256, N_BOX] = (lung[:, 0] * 255).round().to(torch.uint8)
        for j, r in enumerate(rows):
            found = masks[int(r)]
            if not found:
                continue
            labels = [k for k in found if k in BOX_FINDINGS]
            stack = torch.from_numpy(np.stack([found[k] for k in labels])).float()[None]
            small = F.adaptive_avg_pool2d(stack, out_side)[0]
            targets[j, [BOX_FINDINGS.index(k) for k in labels]] = (small * 255).round().to(torch.uint8)
        return _MaskSplit(images.contiguous(), targets, np.asarray(split.labels)[rows])

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        save_checkpoint(directory, self.ensure_net().state_dict(), {
            "method": self.name, "supervision": self.supervision, "input_size": self.input_size, "n_out": self.n_out,
            "prevalence": self.prevalence.tolist(), **{k: self.config[k] for k in self.net_keys},
            "config": self.config, "fit": self.fit_info,
        }, CHECKPOINT)

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        try:
            weights, state = load_checkpoint(directory, CHECKPOINT, fix="fit oracle-seg first",
                                             legacy_meta=LEGACY_STATE_FILE)
            for k in self.net_keys:
                self.config[k] = state[k]
            self.input_size = None if state["input_size"] is None else int(state["input_size"])
            self.n_out = int(state["n_out"])
            self.prevalence = np.asarray(state["prevalence"], dtype=np.float64).reshape(NUM_FINDINGS)
            self.fit_info = dict(state.get("fit", {}))
            net = self.build()
            net.load_state_dict(weights)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{directory}: not a valid oracle-seg checkpoint ({first}); delete it and re-run fit") from None
        net.to(self.device).eval()

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        net = self.ensure_net().eval()
        bs = max(1, int(self.config.get("explain_batch_size", 64)))
        out = [net(self._prepare(images[s : s + bs])).float() for s in range(0, len(images), bs)]
        return torch.cat(out)[:, :N_BOX] if out else torch.zeros(0, N_BOX, 1, 1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Box findings: the peak of the segmentation probability; the other six: training prevalence."""
        probs = torch.as_tensor(self.prevalence, dtype=torch.float32).repeat(images.shape[0], 1)
        if len(images):
            probs[:, list(BOX_FINDING_INDICES)] = torch.sigmoid(self._logits(images).amax(dim=(2, 3))).cpu()
        return probs

    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """Per-class segmentation probability maps at the native (output) side; zeros for non-box findings."""
        classes = [int(c) for c in classes]
        probs = torch.sigmoid(self._logits(images)).cpu()
        zeros = probs.new_zeros(probs.shape[0], 1, *probs.shape[-2:])
        chans = [probs[:, BOX_FINDING_INDICES.index(c)][:, None] if c in BOX_FINDING_INDICES else zeros
                 for c in classes]
        return torch.cat(chans, 1) if chans else probs[:, :0]


def _require_masks(split) -> None:
    """A clear one-line refusal for a cohort without exact lesion masks (NIH, a plain CXRDataset)."""
    name = (getattr(split, "meta", None) or {}).get("dataset") or type(split).__name__
    if not hasattr(split, "lesion_masks"):
        raise ValueError(f"oracle-seg needs exact lesion masks (SynthCXR); the {name} cohort has none")
