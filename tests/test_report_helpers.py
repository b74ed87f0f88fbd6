"""Small fake run folders for the report tests (the run-folder contract of common.md §5).

Heatmaps are Gaussian blobs placed on or beside each ground-truth box ("good" on it, "medium" half a
box away, "random" anywhere, "prior-center" a box away), scored by the real scorer, so a report
built from them has a known ranking: good > medium > the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wsl_bench.heatmaps import write_bundle
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding
from wsl_bench.metrics import score

# method -> blob offset as a fraction of the box size (0 = on target); None = uniform noise
FAKE_METHODS = {"good": 0.0, "medium": 0.5, "random": None, "prior-center": 1.0}


def make_fake_run(
    root: Path, n_images: int = 24, size: int = 256, seed: int = 0, methods=FAKE_METHODS, policy: str = "wang2017"
) -> Path:
    """Write a run folder with heatmap bundles scored by the real scorer (`wsl_bench.metrics.score`)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    ids = [f"img{i:03d}" for i in range(n_images)]
    patients = [f"p{i // 2:03d}" for i in range(n_images)]
    boxes = []
    for i, iid in enumerate(ids):
        label = BOX_FINDINGS[i % len(BOX_FINDINGS)]
        side = [20, 50, 110][i % 3]
        x, y = rng.integers(10, size - side - 10, size=2)
        boxes.append(dict(image_id=iid, label=label, x=float(x), y=float(y), w=float(side), h=float(side * 0.8)))
    boxes = pd.DataFrame(boxes)
    labels = pd.DataFrame(0, index=ids, columns=list(FINDINGS))
    labels[:] = (rng.uniform(size=labels.shape) < 0.3).astype(int)
    for b in boxes.itertuples():
        labels.loc[b.image_id, box_to_finding(b.label)] = 1
    (root / "data").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    images = pd.DataFrame({"image_id": ids, "patient_id": patients, "orig_h": size, "orig_w": size})
    pd.concat([images, labels.reset_index(drop=True)], axis=1).to_csv(root / "data" / "images.csv", index=False)
    boxes.to_csv(root / "data" / "boxes.csv", index=False)
    yy, xx = np.mgrid[0:size, 0:size]
    # smooth chest-like images (two dark lung fields on a bright body), small enough for a gallery
    lungs = np.exp(-(((xx - size * 0.32) / (size * 0.14)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2))
    lungs += np.exp(-(((xx - size * 0.68) / (size * 0.14)) ** 2 + ((yy - size * 0.5) / (size * 0.3)) ** 2))
    gallery = {iid: (200 - 140 * lungs + rng.normal(0, 4, (size, size))).clip(0, 255).astype(np.uint8) for iid in ids}
    np.savez_compressed(root / "data" / "gallery.npz", **gallery)

    sizes = {iid: (size, size) for iid in ids}
    probs_labels = labels.rename_axis("image_id")
    timings = {}
    for mi, (name, offset) in enumerate(methods.items()):
        maps = {}
        for b in boxes.itertuples():
            for label in BOX_FINDINGS:
                maps[f"{b.image_id}::{label}"] = rng.uniform(0, 0.2, (32, 32)).astype(np.float32)
            if offset is None:  # a blob anywhere
                cx, cy = rng.uniform(0, size), rng.uniform(0, size)
            else:  # a blob displaced from the box centre by `offset` box sizes
                cx = b.x + b.w / 2 + offset * b.w * rng.choice([-1, 1])
                cy = b.y + b.h / 2 + offset * b.h * rng.choice([-1, 1])
            blob = np.exp(-(((xx - cx) / (b.w / 2)) ** 2 + ((yy - cy) / (b.h / 2)) ** 2))
            maps[f"{b.image_id}::{b.label}"] = blob[::8, ::8].astype(np.float32)
        quality = 0.0 if offset is None else 1.0 / (1.0 + offset)
        probs = (labels * quality + rng.uniform(0, 1, labels.shape) * (1 - quality * 0.5)).clip(0, 1).rename_axis("image_id")
        write_bundle(root / "heatmaps" / f"{name}.npz", maps, sizes)
        probs.reset_index().to_csv(root / "heatmaps" / f"{name}.probs.csv", index=False)
        score(maps, boxes, sizes, policy=policy, patients=dict(zip(ids, patients)), probs=probs, labels=probs_labels,
              n_boot=200, seed=0, out_dir=root / "scores" / name)
        timings[name] = {"fit_s": 10.0 * mi, "explain_s": 1.5 + mi, "heatmaps_per_s": 100.0 / (1 + mi), "n_params": 1_000_000 * mi}
    manifest = {"methods": list(methods), "timings": timings, "seed": seed, "versions": {"wsl_bench": "0.1.0"}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def test_fake_run_has_the_run_folder_layout(tmp_path):
    run = make_fake_run(tmp_path / "run", n_images=8)
    for rel in ("manifest.json", "data/images.csv", "data/boxes.csv", "data/gallery.npz", "scores/good/per_box.csv",
                "scores/good/summary.json", "heatmaps/good.npz", "heatmaps/good.probs.csv"):
        assert (run / rel).is_file(), rel
    good = json.loads((run / "scores/good/summary.json").read_text())
    rand = json.loads((run / "scores/random/summary.json").read_text())
    assert good["iou_acc"]["macro"]["0.1"] > rand["iou_acc"]["macro"]["0.1"]


_SHARED: dict = {}


@pytest.fixture(scope="session")
def fake_report(tmp_path_factory):
    """One fake run and its report, built once per session for every test module that imports this
    fixture (each import makes its own fixture, so the cache lives here, in the helper module)."""
    if "report" not in _SHARED:
        from wsl_bench.report import write_report

        root = tmp_path_factory.mktemp("report")
        run = make_fake_run(root / "run")
        md = write_report([run], root / "out", n_boot=200)
        _SHARED["report"] = (run, md.parent)
    return _SHARED["report"]
