"""SynthConfig: everything that determines a SynthCXR cohort (its hash names the disk cache)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Bump when the renderer changes in a way that changes pixels, so stale caches are not reused.
RENDERER_VERSION = "7"

CONFOUNDERS = ("chest_tube", "text_marker")


@dataclass(frozen=True)
class SynthConfig:
    """Size, seed and knobs of a simulated cohort.

    `generate_size` is the side of the rendered ("original") images, in which boxes and lesion
    masks are expressed; `image_size` is the model-side size the splits yield.
    `confounders` names shortcut cues (see CONFOUNDERS) that are off by default: `chest_tube`
    draws a tube in most pneumothorax images, `text_marker` stamps a laterality marker whose
    corner depends on whether the image has any finding.
    `box_prevalence_floor` / `other_prevalence_floor` scale the real ChestX-ray14 label
    frequencies up so every class has enough positives (our choice; real co-occurrence kept).
    """

    n_train: int = 2400
    n_val: int = 400
    n_test: int = 600
    image_size: int = 128
    generate_size: int = 256
    seed: int = 0
    confounders: tuple[str, ...] = ()
    confounder_strength: float = 0.9
    box_prevalence_floor: float = 0.10
    other_prevalence_floor: float = 0.04
    images_per_patient: float = 1.6
    lesion_contrast: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SynthConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 16 <= int(self.generate_size) <= 2048:
            raise ValueError(f"SynthConfig.generate_size must be in [16, 2048], got {self.generate_size}")
        if not 8 <= int(self.image_size) <= 2048:
            raise ValueError(f"SynthConfig.image_size must be in [8, 2048], got {self.image_size}")
        conf = tuple(self.confounders) if not isinstance(self.confounders, str) else tuple(
            c for c in self.confounders.split(",") if c
        )
        unknown = [c for c in conf if c not in CONFOUNDERS]
        if unknown:
            raise ValueError(f"unknown confounder(s) {unknown}; choose from {', '.join(CONFOUNDERS)}")
        object.__setattr__(self, "confounders", tuple(sorted(set(conf))))
        if not 0.0 < self.lesion_contrast <= 5.0:
            raise ValueError(f"SynthConfig.lesion_contrast must be in (0, 5], got {self.lesion_contrast}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SynthConfig":
        """Build from a plain dict (e.g. a YAML preset); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SynthConfig key(s) {unknown}; known: {', '.join(sorted(known))}")
        d = dict(d)
        if "confounders" in d and d["confounders"] is not None and not isinstance(d["confounders"], str):
            d["confounders"] = tuple(d["confounders"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["confounders"] = list(self.confounders)
        return d

    def generation_key(self) -> dict[str, Any]:
        """The fields that change pixels or labels (image_size does not)."""
        d = self.to_dict()
        d.pop("image_size")
        d["renderer_version"] = RENDERER_VERSION
        return d

    def fingerprint(self) -> str:
        """Stable hash of the generated content (images at generate_size, labels, boxes)."""
        blob = json.dumps(self.generation_key(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
