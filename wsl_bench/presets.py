"""The run presets (data, method preset and stage settings of each), the default methods, the fit keys.

`tiny` is for tests and smoke runs; docs/harness.md ("Presets") says what each costs.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_METHODS: tuple[str, ...] = ("clarity", "gradcam")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "method_preset": "quick",
        "data": {"name": "synth", "image_size": 128},
        "fit": {"max_epochs": None, "batch_size": None, "num_workers": 0},
        "explain": {"batch_size": 32},
        "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
    # SynthCXR at 224 px (rendered at 256, resized), quick's split sizes; the methods' `standard` presets train
    # until validation mean AUROC stops improving (an epoch cap and a patience each) and explain at stride 16
    # (14x14 maps). clarity,gradcam: about 1.7-2 h on 2 idle CPU cores, CLARiTy's part alone 41 min measured
    # (docs/harness.md, "Presets").
    "standard": {
        "method_preset": "standard",
        "data": {"name": "synth", "image_size": 224, "generate_size": 256},
        "fit": {"max_epochs": None, "batch_size": None, "num_workers": 0},
        "explain": {"batch_size": 32},
        "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
    "paper": {
        "method_preset": "paper",
        "data": {"name": "nih", "image_size": 224, "val_fraction": 0.1, "skip_bad": False},
        "fit": {"max_epochs": None, "batch_size": None, "num_workers": 8},
        "explain": {"batch_size": 64},
        "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
    "tiny": {
        "method_preset": "quick",
        "data": {"name": "synth", "image_size": 32, "generate_size": 64, "n_train": 160, "n_val": 48, "n_test": 64},
        "fit": {"max_epochs": 1, "batch_size": 32, "num_workers": 0},
        "explain": {"batch_size": 16},
        "score": {"policy": "wang2017", "n_boot": 50, "sanity": True, "sanity_images": 16},
        "report": {"full": True},
    },
}
FIT_KEYS = {"max_epochs", "batch_size", "num_workers", "compile", "channels_last", "precision"}


def merge(base: dict, extra: dict) -> dict:
    """`extra` merged into a copy of `base`, nested dicts key by key (overrides onto a preset)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
