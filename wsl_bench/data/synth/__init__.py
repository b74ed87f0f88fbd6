"""SynthCXR: a simulated chest X-ray cohort with exact lesion ground truth (see docs/data.md).

`load_synth(SynthConfig(...))` returns a `Cohort` whose splits are `SynthDataset`s; generation is
deterministic from the seed and cached on disk under `$WSL_BENCH_CACHE/synth` (default
`~/.cache/wsl-bench/synth`), keyed by the config fingerprint.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from wsl_bench.data import assets
from wsl_bench.data.schema import BOX_COLUMNS, Cohort
from wsl_bench.data.synth.anatomy import AnatomyBank, build_bank
from wsl_bench.data.synth import config as synth_config
from wsl_bench.data.synth.config import CONFOUNDERS, SynthConfig
from wsl_bench.data.synth.dataset import (
    SPLITS, LesionMaskStore, SynthDataset, load_split_arrays, save_split_arrays, write_cache,
)
from wsl_bench.data.synth.render import ImageSpec, LesionRequest, render_chunk
from wsl_bench.data.synth.reports import write_report
from wsl_bench.data.synth.sample import plan_cohort

__all__ = [
    "CONFOUNDERS", "SynthConfig", "SynthDataset", "load_synth", "generate_cohort", "synth_cache_dir",
    "anatomy_bank", "render_specs", "synth_info",
]

CHUNK = 128  # images rendered together at 256 px (fewer at larger sizes to bound memory)


def chunk_size_for(g: int) -> int:
    """Images per render chunk at side g: a function of g only, so results stay deterministic."""
    return int(np.clip(CHUNK * (256 / g) ** 2, 4, CHUNK))


def synth_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$WSL_BENCH_CACHE/synth`, else `~/.cache/wsl-bench/synth`."""
    return Path(cache_dir).expanduser() if cache_dir else assets.default_cache_dir() / "synth"


def bank_size_for(g: int) -> int:
    """How many anatomy entries to precompute at side g (bounded memory: ~300 MB)."""
    return int(np.clip(3e8 // (16 * g * g), 8, 96))


@functools.lru_cache(maxsize=2)
def _bank(g: int, k: int, seed: int, templates_dir: str) -> AnatomyBank:
    torch_threads = torch.get_num_threads()
    try:
        return build_bank(assets.lung_templates(templates_dir), g, k, seed,
                          template_boxes=assets.lung_template_boxes(templates_dir),
                          ptx_shapes=assets.pneumothorax_shapes(templates_dir))
    finally:
        torch.set_num_threads(torch_threads)


def anatomy_bank(g: int, seed: int, cache_dir: str | os.PathLike | None = None) -> AnatomyBank:
    return _bank(int(g), bank_size_for(int(g)), int(seed), str(synth_cache_dir(cache_dir).parent if cache_dir is None else Path(cache_dir)))


def render_specs(
    bank: AnatomyBank, specs: list[ImageSpec], contrast: float = 1.0,
    progress: Callable[[int], None] | None = None,
):
    """Render specs in fixed-size chunks; yields RenderResults."""
    step = chunk_size_for(bank.size)
    for s in range(0, len(specs), step):
        res = render_chunk(bank, specs[s : s + step], contrast)
        if progress:
            progress(len(res.images))
        yield res


def generate_cohort(cfg: SynthConfig, cache_dir: str | os.PathLike | None = None, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Render a whole cohort in memory: per split the arrays/tables `SynthDataset` is built from."""
    g = cfg.generate_size
    bank = anatomy_bank(g, cfg.seed, cache_dir)
    plan = plan_cohort(cfg, bank.params)
    n = len(plan.image_ids)
    images = np.empty((n, g, g), dtype=np.uint8)
    lungs = np.empty((n, g, g), dtype=bool)
    drawn: list = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("rendering SynthCXR", total=n)
    pos = 0
    try:
        for res in render_specs(bank, plan.specs, cfg.lesion_contrast, (lambda k: bar.advance(task, k)) if bar else None):
            b = len(res.images)
            images[pos : pos + b] = res.images
            lungs[pos : pos + b] = res.lungs
            drawn.extend(res.lesions)
            pos += b
    finally:
        if bar:
            bar.stop()
    out: dict[str, dict[str, Any]] = {}
    for s_idx, name in enumerate(SPLITS):
        rows = np.flatnonzero(plan.splits == s_idx)
        items, box_rows, reports = [], [], []
        for local, r in enumerate(rows):
            for les in drawn[r]:
                items.append((local, les.label, les.y0, les.x0, les.mask))
                if name == "test":
                    box_rows.append((plan.image_ids[r], les.label, *les.bbox()))
            reports.append(write_report(plan.specs[r].seed, drawn[r], plan.specs[r].findings, plan.views[r], g))
        out[name] = {
            "images": images[rows],
            "lungs": lungs[rows],
            "store": LesionMaskStore.build(items, g),
            "boxes": pd.DataFrame(box_rows, columns=list(BOX_COLUMNS)),
            "image_ids": [plan.image_ids[r] for r in rows],
            "patient_ids": [plan.patient_ids[r] for r in rows],
            "views": [plan.views[r] for r in rows],
            "labels": plan.labels[rows],
            "reports": reports,
        }
    return out


def _dataset(payload: dict[str, Any], cfg: SynthConfig, split: str) -> SynthDataset:
    return SynthDataset(
        payload["image_ids"], payload["patient_ids"], payload["labels"], payload["images"], payload["lungs"],
        cfg.image_size, payload["boxes"], payload["reports"], payload["store"], payload["views"],
        meta={"split": split, "dataset": "synth", "generate_size": cfg.generate_size},
    )


def load_synth(cfg: SynthConfig | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = False) -> Cohort:
    """The SynthCXR cohort for `cfg`, from the disk cache when present, else rendered and cached.

    `cache_dir=None` uses `$WSL_BENCH_CACHE/synth` (default `~/.cache/wsl-bench/synth`); pass
    `cache_dir=False` to skip the disk cache entirely.
    """
    cfg = cfg or SynthConfig()
    fp = cfg.fingerprint()
    payloads = None
    folder = None
    if cache_dir is not False:
        folder = synth_cache_dir(cache_dir or None) / f"synth-{fp}"
        if (folder / "COMPLETE").is_file():
            try:
                payloads = {s: load_split_arrays(folder, s, cfg.generate_size) for s in SPLITS}
            except (OSError, ValueError, KeyError):
                payloads = None  # damaged cache: regenerate below
    if payloads is None:
        payloads = generate_cohort(cfg, None if cache_dir is False else cache_dir, progress=progress)
        if folder is not None:
            def _writer(tmp: Path) -> None:
                for s in SPLITS:
                    save_split_arrays(tmp, s, payloads[s])
                import json

                (tmp / "config.json").write_text(json.dumps(cfg.generation_key(), sort_keys=True, indent=2))

            try:
                write_cache(folder, _writer)
            except OSError:
                pass  # caching is an optimisation; an unwritable cache dir must not fail the run
    splits = {s: _dataset(payloads[s], cfg, s) for s in SPLITS}
    info = {
        "dataset": "synth",
        "config": cfg.to_dict(),
        "renderer_version": synth_config.RENDERER_VERSION,  # read at call time, like the fingerprint
        "n_images": {s: len(splits[s]) for s in SPLITS},
        "n_boxes": int(len(splits["test"].boxes)),
        "boxes_per_label": {str(k): int(v) for k, v in splits["test"].boxes.groupby("label").size().items()},
        "skipped_bad_images": 0,
    }
    return Cohort(name="synth", train=splits["train"], val=splits["val"], test=splits["test"], fingerprint=f"synth-{fp}", info=info)


def synth_info(cfg: SynthConfig) -> dict[str, Any]:
    """Counts and label prevalence of a SynthCXR config, from its plan (no pixels rendered)."""
    from wsl_bench.data.synth.anatomy import sample_bank_params
    from wsl_bench.labels import FINDINGS

    params = sample_bank_params(np.random.default_rng([cfg.seed, 7001]), bank_size_for(cfg.generate_size), 1)
    plan = plan_cohort(cfg, params)
    test = plan.splits == 2
    return {
        "images": len(plan.image_ids),
        "split": {"train": int((plan.splits == 0).sum()), "val": int((plan.splits == 1).sum()), "test": int(test.sum())},
        "patients": len(set(plan.patient_ids)),
        "prevalence": {f: round(float(plan.labels[:, j].mean()), 4) for j, f in enumerate(FINDINGS)},
        "box_images": int(sum(1 for i in np.flatnonzero(test) if plan.specs[i].lesions)),
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
    }
