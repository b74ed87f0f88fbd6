"""Shared plumbing of the trained baselines: fit through the harness glue, a checkpoint cache so
methods on the same backbone train it once, save/load in the checkpoint format (`wsl_bench.checkpoints`),
batched predict.

Checkpoint sharing (config key ``share_checkpoint``):
  "auto" (default)  the trained network is cached under ``<run>/shared/backbones/<arch>-<key>/``,
                    keyed by everything that affects training (the config keys in `train_keys`,
                    seed, image size, and a hash of the training/validation ids and labels). Every
                    method with the same key (e.g. gradcam, gradcam++, scorecam, ig on one ResNet)
                    loads it instead of training again.
  "<method name>"   load the network that method wrote to ``<run>/checkpoints/<method>/``
                    (an error if it is missing or was trained with another architecture).
  "none"            always train.

The shared cache is sealed with checksums once written (`wsl_bench.caches`): a cache whose files fail their
checksums (or that nobody sealed) is removed and trained again, never loaded, and every fit records the
cache files it trusted so the run's manifest covers them. A cache from before the one checkpoint format (its
seal covers ``model_config.json``, not ``model.json``) fails that check too, so it is rebuilt with a log line;
a method's own checkpoint folder from then is still read (`LEGACY_CONFIG_FILE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from wsl_bench import caches
from wsl_bench.checkpoints import load_checkpoint, read_meta, save_checkpoint
from wsl_bench.methods import FitContext, Method

CHECKPOINT = "model"  # the wsl_bench.checkpoints pair WEIGHTS_FILE + CONFIG_FILE
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "model.json"
LEGACY_CONFIG_FILE = "model_config.json"  # the unsealed JSON older versions wrote; still read


def data_signature(*splits) -> str:
    """A short hash of the image ids and labels of the given splits (what training saw)."""
    h = hashlib.sha256()
    for ds in splits:
        h.update("\n".join(map(str, getattr(ds, "image_ids", []))).encode())
        labels = getattr(ds, "labels", None)
        if labels is not None:
            h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.float32)).tobytes())
        h.update(str(len(ds)).encode())
    return h.hexdigest()[:16]


def chunks(n: int, size: int) -> Iterator[slice]:
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class TrainedNetMethod(Method):
    """A method whose explanations come from one trained network `self.net` (grayscale in, 14 logits out).

    Subclasses implement `build_net()` and `explain_batch(images, classes)`; this class does the
    rest. Config keys read here: see `base_defaults`.
    """

    trainable = True
    base_defaults: ClassVar[dict[str, Any]] = {
        "weights": None,  # optional local pretrained file (never downloaded)
        "image_size": None,  # None: the dataset's size (ctx.image_size)
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "max_epochs": 6,
        "batch_size": 32,
        "patience": 3,
        "pos_weight": "auto",  # "auto": neg/pos ratio per class (clipped to [1, 20]); None: plain BCE
        "explain_batch_size": 16,
        "normalize": "minmax",  # per-map scaling of returned heatmaps: minmax | max | none
        "share_checkpoint": "auto",
    }
    config_keys: ClassVar[dict[str, Any]] = dict(base_defaults)  # read with config.get: keys and types `--set` accepts
    # Config keys that change the trained network (part of the checkpoint-sharing key).
    train_keys: ClassVar[tuple[str, ...]] = ("arch", "weights", "lr", "weight_decay", "max_epochs", "batch_size",
                                             "patience", "pos_weight")

    def __init__(self, config: dict[str, Any] | None = None, device: str | torch.device = "cpu"):
        super().__init__({**self.base_defaults, **(config or {})}, device)
        self.net: nn.Module | None = None
        self.image_size: int | None = self.config.get("image_size")
        self.fit_info: dict[str, Any] = {}

    # -- to implement -------------------------------------------------------------------------
    def build_net(self) -> nn.Module:
        raise NotImplementedError

    def explain_batch(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    # -- network ------------------------------------------------------------------------------
    def ensure_net(self) -> nn.Module:
        if self.net is None:
            if self.image_size is None:
                self.image_size = 128
            self.net = self.build_net().to(self.device)
        return self.net

    def net_config(self) -> dict[str, Any]:
        """What `load` needs to rebuild the network before reading its weights."""
        keys = sorted(set(self.train_keys) | {"arch"})
        return {"image_size": self.image_size, **{k: self.config.get(k) for k in keys}}

    # -- fit ----------------------------------------------------------------------------------
    def training_key(self, train, val, ctx: FitContext) -> str:
        sig = {
            "family": self.share_family(),
            "net": self.net_config(),
            "seed": ctx.seed,
            "epochs": ctx.max_epochs,
            "batch": ctx.batch_size,
            "data": data_signature(train, val),
        }
        return hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def share_family(self) -> str:
        """Methods with the same family and training config share a trained network."""
        return type(self).__name__

    def fit(self, train, val, ctx: FitContext) -> None:
        self.image_size = int(self.config.get("image_size") or getattr(train, "image_size", None) or ctx.image_size)
        ckdir = Path(ctx.checkpoint_dir)
        share = self.config.get("share_checkpoint") or "none"
        started = time.perf_counter()
        source = self._shared_source(share, train, val, ctx)
        # fits running at once (`--fit-jobs`) train a shared backbone once: the others wait, then load it
        with caches.building(source, ctx) if source is not None and share == "auto" else contextlib.nullcontext():
            self._fit_or_load(source, share, train, val, ctx)
        self.fit_info["fit_s"] = round(time.perf_counter() - started, 3)
        self.save(ckdir)

    def _fit_or_load(self, source: Path | None, share: str, train, val, ctx: FitContext) -> None:
        if source is not None and self._source_usable(source, share):
            self.load(source)
            caches.record_use(ctx, source, WEIGHTS_FILE, CONFIG_FILE)
            self.fit_info = {"shared_from": str(source), "trained": False}
        else:
            self._train(train, val, ctx)
            # what ran (train_module applies a run's fit.max_epochs / fit.batch_size over the method config)
            self.fit_info = {"trained": True, "max_epochs": ctx.extra["fit_max_epochs"],
                             "batch_size": ctx.extra["fit_batch_size"]}
            if source is not None and share == "auto":
                self.save(source)
                caches.seal(source, WEIGHTS_FILE, CONFIG_FILE)
                caches.record_use(ctx, source, WEIGHTS_FILE, CONFIG_FILE)

    @staticmethod
    def _source_usable(source: Path, share: str) -> bool:
        """The shared cache ("auto") only when its files match their seal (else it is removed and retrained);
        another method's checkpoint folder when it holds weights (the run's manifest checks those)."""
        if share == "auto":
            return caches.usable(source, WEIGHTS_FILE, CONFIG_FILE)
        return (source / WEIGHTS_FILE).is_file()

    def _shared_source(self, share: str, train, val, ctx: FitContext) -> Path | None:
        if share == "none" or ctx.run_dir is None:
            if share not in ("none", "auto"):
                raise ValueError(f"share_checkpoint={share!r} needs a run folder (FitContext.run_dir)")
            return None
        run = Path(ctx.run_dir)
        if share == "auto":
            key = self.training_key(train, val, ctx)
            return run / "shared" / "backbones" / f"{self.config.get('arch')}-{key}"
        src = run / "checkpoints" / share
        if not (src / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"share_checkpoint={share!r}: no {WEIGHTS_FILE} in {src}; run method {share!r} first "
                "(list it before this one in --methods) or set share_checkpoint to 'auto'"
            )
        theirs = read_meta(src, CHECKPOINT, fix=f"run method {share!r} again", legacy_meta=LEGACY_CONFIG_FILE)
        if theirs.get("arch") != self.config.get("arch"):
            raise ValueError(
                f"share_checkpoint={share!r} holds arch {theirs.get('arch')!r}, this method wants "
                f"{self.config.get('arch')!r}; use the same 'arch' or share_checkpoint='auto'"
            )
        return src

    def make_module(self, net: nn.Module, pos_weight):
        from wsl_bench.training import ClassifierModule

        return ClassifierModule(
            net, lr=float(self.config["lr"]), weight_decay=float(self.config["weight_decay"]), pos_weight=pos_weight,
            warmup_frac=self.config.get("warmup_frac"),  # set by the ViT baselines' standard preset; else constant
        )

    def _train(self, train, val, ctx: FitContext) -> None:
        from wsl_bench.training import train_module

        torch.manual_seed(ctx.seed)
        self.net = None
        net = self.ensure_net().cpu()
        module = self.make_module(net, self._pos_weight(train))
        train_module(
            module,
            train,
            val,
            ctx,
            max_epochs=int(self.config["max_epochs"]),
            batch_size=int(self.config["batch_size"]),
            patience=int(self.config.get("patience", 3)),
        )
        self.net = module.net.to(self.device).eval()

    def _pos_weight(self, train) -> torch.Tensor | None:
        if self.config.get("pos_weight") != "auto":
            pw = self.config.get("pos_weight")
            return None if pw is None else torch.as_tensor(pw, dtype=torch.float32)
        labels = np.asarray(getattr(train, "labels"), dtype=np.float64)
        pos = labels.sum(0)
        ratio = (labels.shape[0] - pos) / np.maximum(pos, 1.0)
        return torch.as_tensor(np.clip(ratio, 1.0, 20.0), dtype=torch.float32)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        net = self.ensure_net()
        meta = {"method": self.name, **self.net_config(), "fit": self.fit_info}
        save_checkpoint(directory, net.state_dict(), meta, CHECKPOINT)

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        state, saved = load_checkpoint(directory, CHECKPOINT, fix="fit the method first",
                                       legacy_meta=LEGACY_CONFIG_FILE)
        if saved.get("arch") != self.config.get("arch"):
            raise ValueError(
                f"{directory / CONFIG_FILE}: checkpoint has arch={saved.get('arch')!r}, config says "
                f"{self.config.get('arch')!r}; point the method at its own checkpoint or change 'arch'"
            )
        # network-shaping keys come from the checkpoint, so a loaded net always matches its weights
        for key in self.net_config():
            if key in saved and key != "image_size":
                self.config[key] = saved[key]
        self.image_size = saved.get("image_size") or self.image_size
        self.net = None
        net = self.ensure_net()
        net.load_state_dict(state)
        net.to(self.device).eval()

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        net = self.ensure_net().eval()
        bs = int(self.config.get("explain_batch_size", 16)) * 4
        out = [torch.sigmoid(net(images[s].to(self.device)).float()) for s in chunks(len(images), bs)]
        return torch.cat(out).cpu() if out else torch.zeros(0, 14)

    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        from baselines._cam_engine import normalize_maps

        self.ensure_net().eval()
        classes = [int(c) for c in classes]
        bs = int(self.config.get("explain_batch_size", 16))
        maps = [self.explain_batch(images[s].to(self.device), classes).detach().float().cpu() for s in
                chunks(len(images), bs)]
        return normalize_maps(torch.cat(maps), str(self.config.get("normalize", "minmax")))

