"""Baseline methods; importing this package registers them."""

import importlib as _importlib
import warnings as _warnings

# CAM family, ViT explanations, CNN-ViT hybrid, captum attributions
for _mod in ("cam", "vit", "hybrid", "attributions"):
    try:
        _importlib.import_module(f"baselines.{_mod}")
    except ImportError as _exc:  # an optional dependency missing must not hide the other baselines
        _warnings.warn(f"baselines.{_mod} not registered: {_exc}", stacklevel=2)

from baselines import priors  # noqa: E402,F401  (sanity references; no optional dependencies)
from baselines import oracle  # noqa: E402,F401  (the supervised ceiling, oracle-seg; torch + safetensors only)

# CAN (cross-attention CNNs) and AFLoc (vision-language, offline text encoder)
for _mod in ("can", "afloc"):
    try:
        _importlib.import_module(f"baselines.{_mod}")
    except ImportError as _exc:
        _warnings.warn(f"baselines.{_mod} not registered: {_exc}", stacklevel=2)
