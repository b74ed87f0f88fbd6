"""Small fake run folders for the report tests (the run-folder contract of common.md §5).

Heatmaps are Gaussian blobs placed near each ground-truth box, closer for a "better" method, so
a report built from them has a known ranking: good > medium > random.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding

IOU_T = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")
IOBB_T = ("0.1", "0.25", "0.5", "0.75", "0.9")
# method -> blob offset as a fraction of the box size (0 = on target); None = uniform noise
FAKE_METHODS = {"good": 0.0, "medium": 0.6, "random": None, "prior-center": 2.0}


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter), inter / (bw * bh)


def _fake_summary(per_box: pd.DataFrame, probs: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """The aggregates a scorer writes (issue 3 schema), computed from the per-box table."""
    rng = np.random.default_rng(1)

    def acc(df, col, ts):
        out = {}
        for label in BOX_FINDINGS:
            sub = df[df.label == label]
            out[label] = {t: float((sub[col] > float(t)).mean()) if len(sub) else None for t in ts}
        out["macro"] = {t: float(np.nanmean([out[lb][t] for lb in BOX_FINDINGS if out[lb][t] is not None])) for t in ts}
        return out

    def cis(tab):
        return {lb: {t: [max(0.0, v - 0.1), min(1.0, v + 0.1)] for t, v in d.items() if v is not None} for lb, d in tab.items()}

    iou, iobb = acc(per_box, "best_iou", IOU_T), acc(per_box, "best_iobb", IOBB_T)
    from sklearn.metrics import roc_auc_score

    auroc = {}
    for f in FINDINGS:
        y = labels[f].to_numpy()
        auroc[f] = float(roc_auc_score(y, probs[f].to_numpy())) if 0 < y.sum() < len(y) else None
    auroc["mean"] = float(np.mean([v for v in auroc.values() if v is not None]))
    return {
        "policy": "wang2017",
        "n_boxes": int(len(per_box)),
        "iou_acc": iou,
        "iobb_acc": iobb,
        "afp": {lb: {t: float(rng.uniform(0, 1)) for t in IOBB_T} for lb in BOX_FINDINGS},
        "by_size": {
            b: {"iou_acc": acc(per_box[per_box.size_bin == b], "best_iou", IOU_T)} for b in ("small", "medium", "large")
        },
        "auroc": auroc,
        "ci": {"iou_acc": cis(iou), "iobb_acc": cis(iobb)},
    }


def make_fake_run(root: Path, n_images: int = 24, size: int = 256, seed: int = 0, methods=FAKE_METHODS) -> Path:
    """Write a complete scored run folder under `root` and return it."""
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

    timings = {}
    for mi, (name, offset) in enumerate(methods.items()):
        maps, rows = {}, []
        for b in boxes.itertuples():
            for label in BOX_FINDINGS:
                maps[f"{b.image_id}::{label}"] = rng.uniform(0, 1, (32, 32)).astype(np.float32)
            if offset is None:
                px, py = rng.uniform(0, size - b.w), rng.uniform(0, size - b.h)
            else:
                px, py = b.x + offset * b.w * rng.uniform(0.5, 1.0), b.y + offset * b.h * rng.uniform(0.5, 1.0)
            pred = (px, py, b.w * rng.uniform(0.8, 1.4), b.h * rng.uniform(0.8, 1.4))
            cx, cy = px + pred[2] / 2, py + pred[3] / 2
            blob = np.exp(-((xx - cx) ** 2 / (2 * (pred[2] / 2.5) ** 2) + (yy - cy) ** 2 / (2 * (pred[3] / 2.5) ** 2)))
            maps[f"{b.image_id}::{b.label}"] = blob[::8, ::8].astype(np.float32)
            iou, iobb = _iou((b.x, b.y, b.w, b.h), pred)
            frac = b.w * b.h / size**2
            rows.append(
                dict(
                    image_id=b.image_id, label=b.label, x=b.x, y=b.y, w=b.w, h=b.h,
                    size_bin="small" if frac < 0.025 else ("medium" if frac < 0.078 else "large"),
                    best_iou=iou, best_iobb=iobb, pointing_hit=bool(b.x <= cx <= b.x + b.w and b.y <= cy <= b.y + b.h),
                )
            )
        per_box = pd.DataFrame(rows)
        quality = 0.0 if offset is None else 1.0 / (1.0 + offset)
        probs = (labels * quality + rng.uniform(0, 1, labels.shape) * (1 - quality * 0.5)).clip(0, 1)
        sdir = root / "scores" / name
        sdir.mkdir(parents=True, exist_ok=True)
        per_box.to_csv(sdir / "per_box.csv", index=False)
        (sdir / "summary.json").write_text(json.dumps(_fake_summary(per_box, probs, labels), indent=1))
        (root / "heatmaps").mkdir(exist_ok=True)
        np.savez_compressed(root / "heatmaps" / f"{name}.npz", **maps)
        probs.rename_axis("image_id").reset_index().to_csv(root / "heatmaps" / f"{name}.probs.csv", index=False)
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
