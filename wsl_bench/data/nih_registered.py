"""NIH ChestX-ray14 registered as the dataset `nih`: the official layout under --root, the 984 real boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsl_bench.data.registry import Dataset, DatasetError, register_dataset
from wsl_bench.labels import BOX_FINDINGS, FINDINGS

# Settings a run's `data` section may hold for NIH.
NIH_KEYS = frozenset({"name", "root", "image_size", "val_fraction", "skip_bad", "preload", "cache", "cache_dir"})


@register_dataset
class NIHChestXray14(Dataset):
    """ChestX-ray14 as downloaded (`wsl_bench.data.nih`); its label file and box file are the suite's vocabulary."""

    name = "nih"
    description = ("NIH ChestX-ray14: 112,120 chest X-rays with 14 image labels; 984 boxes of 8 findings "
                   "on 880 images")
    source = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
    root_hint = "the ChestX-ray14 folder with images/ and the CSV files"
    labels = FINDINGS
    localizes = BOX_FINDINGS
    to_suite = {f: (f,) for f in (*FINDINGS, *BOX_FINDINGS)}
    config_keys = NIH_KEYS
    defaults = {"val_fraction": 0.1, "skip_bad": False}

    def load(self, data_cfg: dict[str, Any], seed: int, progress: bool = False):
        from wsl_bench.data.nih import load_nih

        d = {k: v for k, v in data_cfg.items() if k != "name"}
        return load_nih(
            d.pop("root"), image_size=int(d.pop("image_size")), seed=seed,
            val_fraction=float(d.pop("val_fraction", 0.1)), skip_bad=bool(d.pop("skip_bad", False)),
            **{k: d[k] for k in ("preload", "cache", "cache_dir") if k in d}, progress=progress or None,
        )

    def info(self, root: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
        from wsl_bench.data.nih import NIHDataError, dataset_info

        if root is None:
            raise DatasetError("--data nih needs --root DIR (the folder holding images_001… and the CSVs)")
        try:
            return dataset_info(root)
        except NIHDataError as exc:
            raise DatasetError(str(exc)) from None

    def export_mirror(self, out: str | Path, *, size: int, seed: int = 0, progress: bool = False,
                      n: int = 1000) -> dict[str, Any]:
        """The 880 real box images (real ids, patients, labels, views; lesions at the real boxes scaled to
        `size`) as the test list, and `n` SynthCXR images as train_val."""
        from wsl_bench.data.export import export_nih_layout

        return export_nih_layout(out, n=n, size=size, seed=seed, mirror_nih=True, progress=progress)
