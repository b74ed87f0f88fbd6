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
    root: Path, n_images: int = 24, size: int = 256, seed: int = 0, methods=FAKE_METHODS, policy: str = "wang2017",
    sanity: dict[str, dict] | None = None,
) -> Path:
    """Write a run folder with heatmap bundles scored by the real scorer (`wsl_bench.metrics.score`).

    A summary carries a `sanity` block only where `sanity` gives one for its method (by default none:
    scores written before the sanity instruments existed)."""
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
        summary_path = root / "scores" / name / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary.pop("sanity", None)
        if sanity and sanity.get(name) is not None:
            summary["sanity"] = sanity[name]
        summary_path.write_text(json.dumps(summary, indent=1))
        timings[name] = {"fit_s": 10.0 * mi, "explain_s": 1.5 + mi, "heatmaps_per_s": 100.0 / (1 + mi), "n_params": 1_000_000 * mi}
    manifest = {"methods": list(methods), "timings": timings, "seed": seed, "versions": {"wsl_bench": "0.1.0"}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def toy_sanity(
    role: str = "method",
    gain: tuple[float, float, float, float] | None = (0.10, 0.05, 0.15, 0.001),
    right_class: tuple[float, float, float] | None = (0.6, 0.5, 0.7),
    class_correlation: float | None = 0.3,
    randomisation: tuple[float, float, float] | None = (0.1, 0.0, 0.2),
    priors: dict[str, float] | None = None,
    cells: dict[tuple[str, str], tuple[float, float, float, float]] | None = None,
) -> dict:
    """A `summary.json["sanity"]` block of the scorer's shape with chosen numbers.

    `gain` (diff, ci low, ci high, p) is the macro row at every T(IoU) and, unless `cells` overrides a
    (scope, label), every class and size-bin row too; None leaves out what it names (not computed)."""
    priors = {"prior-lung": 0.2, "prior-center": 0.1} if priors is None else priors
    rows = []
    if gain is not None:
        scopes = [("macro", "macro")] + [("class", lb) for lb in BOX_FINDINGS] + [("size_bin", b) for b in ("small", "medium", "large")]
        for t in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"):
            for scope, label in scopes:
                d, lo, hi, p = (cells or {}).get((scope, label), gain)
                rows.append({"scope": scope, "label": label, "threshold": t, "method": 0.3 + d, "best_reference": "prior-lung",
                             "reference": 0.3, "diff": d, "ci": [lo, hi], "p_value": p, "n_boxes": 24})
    per_class = {lb: {"rate": right_class[0], "ci": [right_class[1], right_class[2]], "n_boxes": 3} for lb in BOX_FINDINGS} if right_class else {}
    return {
        "correlation": "spearman",
        "role": role,
        "class_specificity": None if right_class is None and class_correlation is None else {
            "n_images": 24, "n_images_not_computed": 0, "not_computed_reason": None,
            "class_correlation": None if class_correlation is None else {"mean": class_correlation, "ci": [class_correlation - 0.05, class_correlation + 0.05]},
            "right_class_rate": None if right_class is None else {
                "chance": 0.125, "n_boxes": 24, "n_boxes_not_computed": 0,
                "macro": {"rate": right_class[0], "ci": [right_class[1], right_class[2]]}, "per_class": per_class},
        },
        "prior_correlation": {k: {"mean": v, "ci": [v - 0.05, v + 0.05]} for k, v in priors.items()},
        "gain_over_guess": None if gain is None else {"references": ["prior-center", "prior-lung", "random"], "rows": rows},
        "randomization": {"status": "skipped", "reason": "no network (an image-independent map)", "n_images": 0, "depths": []}
        if randomisation is None else {
            "status": "computed", "reason": None, "n_images": 16,
            "depths": [{"name": "head", "fraction": 0.1, "mean": min(1.0, randomisation[0] + 0.3), "ci": [randomisation[1] + 0.3, min(1.0, randomisation[2] + 0.3)]},
                       {"name": "all", "fraction": 1.0, "mean": randomisation[0], "ci": [randomisation[1], randomisation[2]]}]},
    }


# A report of many methods: registered names (so families resolve through the registry), blob offsets
# and sanity numbers chosen so every verdict occurs.
MANY_METHODS = {
    "clarity": 0.0, "gradcam": 0.2, "gradcam++": 0.3, "xgradcam": 0.25, "hirescam": 0.2, "layercam": 0.4, "eigencam": 0.8,
    "scorecam": 0.3, "cam-wang2017": 0.6, "gradcam-densenet121": 0.35, "gradcam++-densenet121": 0.4, "gradcam-convnextv2": 1.2,
    "layercam-convnextv2": 1.5, "integrated-gradients": 0.7, "occlusion": 0.3, "rollout": 0.9, "grad-rollout": 0.9,
    "vit-attention": 1.0, "vit-gradcam": 1.1, "hybrid-gradcam": 1.4, "hybrid-rollout": 0.9, "hybrid-grad-rollout": 1.0,
    "can": 0.5, "afloc": 0.6, "oracle-seg": 0.0, "prior-center": 1.0, "prior-lung": 1.2, "random": None,
}


def many_method_sanity() -> dict[str, dict]:
    """Sanity blocks for MANY_METHODS: most localize; a few fail each check; one lacks randomisation."""
    out = {n: toy_sanity() for n in MANY_METHODS}
    out["eigencam"] = toy_sanity(class_correlation=0.95, right_class=(0.13, 0.08, 0.2))
    out["gradcam-convnextv2"] = toy_sanity(gain=(-0.08, -0.12, -0.03, 0.001))
    out["layercam-convnextv2"] = toy_sanity(gain=(-0.01, -0.05, 0.03, 0.6), priors={"prior-lung": 0.85})
    out["vit-attention"] = toy_sanity(randomisation=(0.8, 0.7, 0.9), gain=(0.0, -0.03, 0.04, 0.9))
    out["hybrid-gradcam"] = toy_sanity(randomisation=None)
    out["rollout"] = toy_sanity(cells={("class", "Mass"): (-0.1, -0.2, -0.02, 0.01), ("size_bin", "small"): (0.0, -0.05, 0.05, 0.9)})
    for ref in ("prior-center", "prior-lung", "random"):
        out[ref] = toy_sanity(role="guess", gain=(0.0, -0.02, 0.02, 1.0), randomisation=None, right_class=(0.125, 0.1, 0.15),
                              class_correlation=1.0, priors={"prior-lung": 1.0 if ref == "prior-lung" else 0.3})
    out["oracle-seg"] = toy_sanity(role="ceiling", gain=(0.5, 0.4, 0.6, 0.001))
    return out


def make_many_method_run(root: Path, n_images: int = 24) -> Path:
    """A run folder of 28 methods (24 methods of 7 families, the ceiling and three guesses) with sanity blocks."""
    return make_fake_run(root, n_images=n_images, methods=MANY_METHODS, sanity=many_method_sanity())


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
