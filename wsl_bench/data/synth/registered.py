"""SynthCXR registered as the dataset `synth`: generated locally, exact lesion masks, the suite's own labels."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from wsl_bench.data.registry import Dataset, DatasetError, register_dataset
from wsl_bench.data.synth import SynthConfig, load_synth, synth_info
from wsl_bench.labels import BOX_FINDINGS, FINDINGS

# Settings a run's `data` section may hold: every SynthConfig field but the seed (the run's --seed).
SYNTH_KEYS = frozenset({"name", "root"} | {f.name for f in fields(SynthConfig)} - {"seed"})


@register_dataset
class SynthCXRDataset(Dataset):
    """SynthCXR: every SynthConfig field is a `data` setting, and config.yaml spells all of them out."""

    name = "synth"
    description = "SynthCXR: simulated chest X-rays with the ChestX-ray14 labels and exact lesion masks and boxes"
    source = "generated locally from the real NIH tables and lung masks in the torchxrayvision wheel (no download)"
    labels = FINDINGS
    localizes = BOX_FINDINGS
    to_suite = {f: (f,) for f in (*FINDINGS, *BOX_FINDINGS)}
    needs_root = False
    has_masks = True
    exact_masks = True
    config_keys = SYNTH_KEYS

    def resolve_config(self, data_cfg: dict[str, Any]) -> dict[str, Any]:
        """`name: synth` and every SynthConfig field but the seed (a given `root` is dropped)."""
        rest = {k: v for k, v in data_cfg.items() if k not in ("name", "root")}
        if "seed" in rest:
            raise DatasetError("data.seed is set by --seed (one seed drives data, splits, init and sampling)")
        self.check_keys(rest)
        try:
            full = SynthConfig.from_dict(rest).to_dict()
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"data settings: {exc}") from None
        full.pop("seed")
        return {"name": self.name, **full}

    def load(self, data_cfg: dict[str, Any], seed: int, progress: bool = False):
        rest = {k: v for k, v in data_cfg.items() if k not in ("name", "root")}
        return load_synth(SynthConfig.from_dict({**rest, "seed": seed}), progress=progress)

    def info(self, root: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
        return synth_info(SynthConfig(seed=seed))
