"""Sample who is in a SynthCXR cohort: patients, their images' labels (real ChestX-ray14
co-occurrence, prevalence raised to floors), acquisition, and lesion boxes drawn from the real
BBox_List_2017 boxes of each class (`geometry.BoxSampler`) — everything random, decided before rendering."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from wsl_bench.data import assets
from wsl_bench.data.synth.config import SynthConfig
from wsl_bench.data.synth.geometry import BoxSampler
from wsl_bench.data.synth.render import ImageSpec, LesionRequest
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding, finding_to_box

BOX_SET = {box_to_finding(b) for b in BOX_FINDINGS}


def raked_weights(labels: np.ndarray, targets: np.ndarray, iters: int = 30) -> np.ndarray:
    """Row weights so that weighted prevalence of each finding reaches `targets` (raking), keeping
    the real label combinations (and so their co-occurrence) intact."""
    w = np.ones(len(labels))
    for _ in range(iters):
        prev = (w[:, None] * labels).sum(0) / w.sum()
        for j in np.argsort(prev):
            p = (w * labels[:, j]).sum() / w.sum()
            if p <= 0 or abs(p - targets[j]) < 1e-4:
                continue
            pos = labels[:, j] > 0
            # scale positives by a so that a*P/(a*P + (1-P)) = target
            a = targets[j] * (1 - p) / (p * (1 - targets[j]))
            w[pos] *= a
    return w / w.sum()


def label_pool(cfg: SynthConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Real Data_Entry rows and sampling weights meeting the prevalence floors."""
    de = assets.real_data_entry()
    y = de[list(FINDINGS)].to_numpy(np.float32)
    real = y.mean(0)
    floors = np.array(
        [cfg.box_prevalence_floor if f in BOX_SET else cfg.other_prevalence_floor for f in FINDINGS]
    )
    targets = np.maximum(real, floors)
    return de, raked_weights(y, targets)


@dataclass
class CohortPlan:
    image_ids: list[str]
    patient_ids: list[str]
    splits: np.ndarray  # 0 train, 1 val, 2 test
    labels: np.ndarray  # [N,14]
    views: list[str]
    specs: list[ImageSpec]


def plan_cohort(cfg: SynthConfig, bank_params: dict[str, np.ndarray]) -> CohortPlan:
    """Patients split-disjoint by construction: each split gets its own patients."""
    rng = np.random.default_rng([cfg.seed, 1234])
    de, w = label_pool(cfg)
    y_all = de[list(FINDINGS)].to_numpy(np.float32)
    views_all = de["view"].to_numpy()
    female_all = (de["gender"].to_numpy() == "F")
    sampler = BoxSampler(cfg.seed)
    bank_f = np.flatnonzero(bank_params["female"] > 0.5)
    bank_m = np.flatnonzero(bank_params["female"] <= 0.5)
    g = cfg.generate_size
    ids, pids, splits, labels, views, specs = [], [], [], [], [], []
    patient = 0
    rows = rng.choice(len(w), size=cfg.n_train + cfg.n_val + cfg.n_test, p=w)
    for split, n in enumerate((cfg.n_train, cfg.n_val, cfg.n_test)):
        made = 0
        while made < n:
            patient += 1
            k = min(n - made, 1 + rng.poisson(max(cfg.images_per_patient - 1, 0)))
            female = rng.random() < 0.44
            bank_index = int(rng.choice(bank_f if female and len(bank_f) else bank_m if len(bank_m) else bank_f))
            p_shift = rng.normal(0, 0.015, 2)
            p_scale = rng.uniform(0.92, 1.06, 2)
            for f in range(k):
                r = int(rows[len(ids)])
                lab = y_all[r].copy()
                view = str(views_all[r])
                img_id = f"{patient:08d}_{f:03d}.png"
                ids.append(img_id)
                pids.append(str(patient))
                splits.append(split)
                labels.append(lab)
                views.append(view)
                specs.append(_image_spec(cfg, rng, lab, view, bank_index, p_shift, p_scale, sampler, g))
                made += 1
    return CohortPlan(ids, pids, np.array(splits, dtype=np.int8), np.array(labels, dtype=np.float32).reshape(-1, 14), views, specs)


def _image_spec(cfg, rng, lab, view, bank_index, p_shift, p_scale, sampler: BoxSampler, g, fixed=None) -> ImageSpec:
    """One image's spec. `fixed` maps box labels to boxes (x,y,w,h px) drawn exactly there
    (the NIH mirror); every other positive box finding gets boxes drawn from the real boxes of its
    class (`sampler`, NIH frame), which the renderer maps onto this chest."""
    ap = view == "AP"
    cardio = lab[FINDINGS.index("Cardiomegaly")] > 0
    reqs = []
    fixed = fixed or {}
    for b, boxes in fixed.items():
        reqs.extend(LesionRequest(b, box=tuple(float(v) for v in bx)) for bx in boxes)
    for f_idx in np.flatnonzero(lab):
        f = FINDINGS[f_idx]
        if f not in BOX_SET or finding_to_box(f) in fixed:
            continue
        b = finding_to_box(f)
        reqs.append(LesionRequest(b, cands=sampler.draw(b, rng)))
    others = tuple(FINDINGS[j] for j in np.flatnonzero(lab) if FINDINGS[j] not in BOX_SET)
    emph = "Emphysema" in others
    scale = (float(p_scale[0] * rng.uniform(0.98, 1.02)), float(p_scale[1] * rng.uniform(0.98, 1.02) * (1.06 if emph else 1.0)))
    conf = cfg.confounders
    tube = False
    marker = -1
    s = cfg.confounder_strength
    if "chest_tube" in conf:
        has_ptx = lab[FINDINGS.index("Pneumothorax")] > 0
        tube = bool(rng.random() < (s if has_ptx else (1 - s) * 0.1))
    if "text_marker" in conf:
        sick = lab.sum() > 0
        if rng.random() < s:
            marker = int(rng.choice([1, 3]) if sick else rng.choice([0, 2]))
        else:
            marker = int(rng.integers(4))
    return ImageSpec(
        bank_index=bank_index,
        seed=int(rng.integers(2**62)),
        rot=float(rng.normal(0, 0.035)),
        scale=scale,
        shift=(float(p_shift[0] + rng.normal(0, 0.01)), float(p_shift[1] + rng.normal(0, 0.01))),
        lo=float(rng.uniform(-0.15, 0.2)),
        hi=float(rng.uniform(1.25, 1.6)),
        gamma=float(rng.uniform(0.7, 1.4)),
        noise=float(rng.uniform(0.004, 0.025)),
        blur=float(rng.uniform(0.0, 1.0)),
        # a Cardiomegaly heart fills its real box (render._heart); ctr sizes the normal heart
        ctr=float(rng.uniform(0.53, 0.64) if cardio else rng.uniform(0.38, 0.47)),
        ap=ap,
        findings=others,
        lesions=reqs,
        chest_tube=tube,
        marker_corner=marker,
    )
