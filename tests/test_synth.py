"""SynthCXR: determinism, splits, item contract, exact ground truth, reports, cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from wsl_bench.data.schema import BOX_COLUMNS, Cohort
from wsl_bench.data.synth import SynthConfig, load_synth
from wsl_bench.data.synth.sample import raked_weights
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding, finding_index

SMALL = dict(n_train=48, n_val=12, n_test=40, generate_size=96, image_size=64, seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache folder for the session (lung templates are built once)."""
    return tmp_path_factory.getbasetemp() / "wsl-bench-cache"


@pytest.fixture(scope="module")
def cohort(cache) -> Cohort:
    return load_synth(SynthConfig(**SMALL), cache_dir=cache / "synth")


def test_split_sizes_and_patient_disjoint(cohort):
    assert (len(cohort.train), len(cohort.val), len(cohort.test)) == (48, 12, 40)
    sets = [set(s.patient_ids) for s in (cohort.train, cohort.val, cohort.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    ids = cohort.train.image_ids + cohort.val.image_ids + cohort.test.image_ids
    assert len(set(ids)) == len(ids)


def test_item_contract(cohort):
    item = cohort.train[5]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["labels"].shape == (14,)
    assert item["lung_mask"].shape == (1, 64, 64)
    assert set(torch.unique(item["lung_mask"]).tolist()) <= {0.0, 1.0}
    assert 0.1 < float(item["lung_mask"].mean()) < 0.6  # lungs are a good part of the chest film
    batch = cohort.train.load_images([5, 0, 7])
    assert batch.shape == (3, 1, 64, 64)
    assert torch.equal(batch[0], item["image"])
    assert cohort.train.orig_sizes.tolist()[0] == [96, 96]


def test_deterministic_from_seed(cohort):
    again = load_synth(SynthConfig(**SMALL), cache_dir=False)
    assert np.array_equal(again.test.images_orig, cohort.test.images_orig)
    assert np.array_equal(again.train.labels, cohort.train.labels)
    pd.testing.assert_frame_equal(again.test.boxes.reset_index(drop=True), cohort.test.boxes.reset_index(drop=True), check_dtype=False)
    assert again.test.reports == cohort.test.reports
    other = load_synth(SynthConfig(**{**SMALL, "seed": 4}), cache_dir=False)
    assert not np.array_equal(other.test.images_orig, cohort.test.images_orig)


def test_boxes_are_bounding_boxes_of_lesion_masks(cohort):
    test = cohort.test
    boxes = test.boxes
    assert list(boxes.columns) == list(BOX_COLUMNS)
    assert len(boxes) > 0 and set(boxes["label"]) <= set(BOX_FINDINGS)
    assert cohort.train.boxes.empty and cohort.val.boxes.empty  # the test split holds the box images
    for r in boxes.itertuples(index=False):
        i = test.index_of(r.image_id)
        m = test.lesion_masks(i)[r.label]
        ys, xs = np.nonzero(m)
        assert (r.x, r.y, r.w, r.h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert test.labels[i, finding_index(r.label)] == 1
        assert 0 <= r.x and r.x + r.w <= 96 and 0 <= r.y and r.y + r.h <= 96


def test_every_positive_box_finding_is_drawn(cohort):
    for split in (cohort.train, cohort.val, cohort.test):
        for i in range(len(split)):
            masks = split.lesion_masks(i)
            for b in BOX_FINDINGS:
                pos = split.labels[i, finding_index(b)] == 1
                if not pos:
                    assert b not in masks
                else:
                    assert b in masks and masks[b].sum() >= 3, (split.image_ids[i], b)


def test_intrapulmonary_lesions_lie_in_the_lungs(cohort):
    test = cohort.test
    for i in range(len(test)):
        lung = test.lungs_orig[i]
        for b, m in test.lesion_masks(i).items():
            if b in ("Nodule", "Mass", "Infiltrate", "Pneumonia", "Atelectasis"):
                assert (m & ~lung).sum() == 0


def test_lesions_change_pixels_where_drawn():
    cfg = SynthConfig(n_train=0, n_val=0, n_test=60, generate_size=96, image_size=64, seed=11)
    c = load_synth(cfg, cache_dir=False)
    diffs = []
    for i in range(len(c.test)):
        for b, m in c.test.lesion_masks(i).items():
            if b in ("Nodule", "Mass", "Pneumonia") and m.sum() >= 6:
                img = c.test.images_orig[i].astype(float)
                ring = np.zeros_like(m)
                ys, xs = np.nonzero(m)
                ring[max(0, ys.min() - 4) : ys.max() + 5, max(0, xs.min() - 4) : xs.max() + 5] = True
                ring &= ~m & c.test.lungs_orig[i]
                if ring.sum() >= 6:
                    diffs.append(img[m].mean() - img[ring].mean())
    assert len(diffs) >= 5
    assert np.median(diffs) > 8  # opacities are brighter than the lung around them


def test_reports_name_lesions_and_side(cohort):
    test = cohort.test
    assert len(test.reports) == len(test)
    for i in range(len(test)):
        rep = test.reports[i].lower()
        assert "findings:" in rep and "impression:" in rep
        rows = test.boxes[test.boxes["image_id"] == test.image_ids[i]]
        for lab in rows["label"]:
            assert lab.lower() in rep or box_to_finding(lab).lower() in rep
        if test.labels[i].sum() == 0:
            assert "no acute" in rep


def test_cache_roundtrip(cache, cohort):
    folders = list((cache / "synth").glob("synth-*"))
    assert any((f / "COMPLETE").is_file() for f in folders)
    again = load_synth(SynthConfig(**SMALL), cache_dir=cache / "synth")
    assert again.fingerprint == cohort.fingerprint
    assert np.array_equal(again.train.images, cohort.train.images)
    assert again.test.reports == cohort.test.reports
    i = cohort.test.box_image_indices()[0]
    a, b = again.test.lesion_masks(i), cohort.test.lesion_masks(i)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_env_cache_dir(monkeypatch, tmp_path):
    from wsl_bench.data.synth import synth_cache_dir

    monkeypatch.setenv("WSL_BENCH_CACHE", str(tmp_path))
    assert synth_cache_dir() == tmp_path / "synth"


def test_image_size_does_not_change_content():
    a = SynthConfig(**SMALL)
    b = SynthConfig(**{**SMALL, "image_size": 32})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != SynthConfig(**{**SMALL, "confounders": ("chest_tube",)}).fingerprint()


def test_config_validation():
    with pytest.raises(ValueError, match="unknown confounder"):
        SynthConfig(confounders=("ruler",))
    with pytest.raises(ValueError, match="n_test"):
        SynthConfig(n_test=-1)
    with pytest.raises(ValueError, match="unknown SynthConfig key"):
        SynthConfig.from_dict({"n_trian": 3})
    assert SynthConfig.from_dict({"confounders": ["text_marker"]}).confounders == ("text_marker",)


def test_subset_keeps_boxes_and_masks(cohort):
    idx = cohort.test.box_image_indices()[:3]
    sub = cohort.test.subset(idx)
    assert len(sub) == 3
    assert set(sub.boxes["image_id"]) == {cohort.test.image_ids[i] for i in idx}
    for j, i in enumerate(idx):
        assert sub.lesion_masks(j).keys() == cohort.test.lesion_masks(i).keys()
        assert sub.reports[j] == cohort.test.reports[i]


def test_raked_weights_meet_targets():
    rng = np.random.default_rng(0)
    y = (rng.random((5000, 3)) < [0.02, 0.3, 0.05]).astype(np.float32)
    targets = np.array([0.1, 0.3, 0.08])
    w = raked_weights(y, targets)
    prev = (w[:, None] * y).sum(0)
    assert np.allclose(prev, targets, atol=0.01)


def test_prevalence_follows_floors():
    from wsl_bench.data.synth.sample import label_pool

    de, w = label_pool(SynthConfig())
    prev = (w[:, None] * de[list(FINDINGS)].to_numpy()).sum(0)
    for b in BOX_FINDINGS:
        assert prev[finding_index(b)] >= 0.095
    assert prev[FINDINGS.index("Hernia")] >= 0.035
    # co-occurrence is real: Effusion and Atelectasis are positively associated as in NIH
    y = de[list(FINDINGS)].to_numpy()
    e, a = finding_index("Effusion"), finding_index("Atelectasis")
    joint = (w * y[:, e] * y[:, a]).sum()
    assert joint > prev[e] * prev[a]


@pytest.mark.slow
def test_intensity_histograms_do_not_solve_the_task(cache):
    """A logistic regression on 16-bin global intensity histograms stays near chance
    (mean AUROC over the 14 findings < 0.65): methods have to look at the lesions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    c = load_synth(SynthConfig(n_train=1500, n_val=0, n_test=1000, seed=0), cache_dir=cache / "synth")

    def hist(ds):
        x = ds.images.reshape(len(ds), -1)
        return np.stack([np.bincount(r // 16, minlength=16) for r in x]).astype(float) / x.shape[1]

    xtr, xte = hist(c.train), hist(c.test)
    aucs = []
    for j in range(len(FINDINGS)):
        ytr, yte = c.train.labels[:, j], c.test.labels[:, j]
        assert 0 < ytr.sum() < len(ytr) and 0 < yte.sum() < len(yte)
        model = LogisticRegression(max_iter=2000, C=10.0).fit(xtr, ytr)
        aucs.append(roc_auc_score(yte, model.predict_proba(xte)[:, 1]))
    assert np.mean(aucs) < 0.65, dict(zip(FINDINGS, np.round(aucs, 3)))


def test_confounders_follow_their_finding():
    from wsl_bench.data.synth import anatomy_bank
    from wsl_bench.data.synth.sample import plan_cohort

    cfg = SynthConfig(n_train=400, n_val=0, n_test=0, generate_size=64, confounders=("chest_tube", "text_marker"))
    plan = plan_cohort(cfg, anatomy_bank(64, 0).params)
    ptx = plan.labels[:, FINDINGS.index("Pneumothorax")] > 0
    tube = np.array([s.chest_tube for s in plan.specs])
    assert tube[ptx].mean() > 0.7 and tube[~ptx].mean() < 0.05
    sick = plan.labels.sum(1) > 0
    right_corner = np.isin([s.marker_corner for s in plan.specs], [1, 3])
    assert right_corner[sick].mean() > 0.8 and right_corner[~sick].mean() < 0.2
    off = plan_cohort(SynthConfig(n_train=50, n_val=0, n_test=0, generate_size=64), anatomy_bank(64, 0).params)
    assert not any(s.chest_tube or s.marker_corner >= 0 for s in off.specs)


def test_text_marker_is_stamped():
    cfg = SynthConfig(n_train=0, n_val=0, n_test=12, generate_size=64, image_size=64, confounders=("text_marker",))
    c = load_synth(cfg, cache_dir=False)
    # the glyph is near-white; the film corners are dark air or soft tissue
    corners = [c.test.images_orig[:, 2:9, 2:8], c.test.images_orig[:, 2:9, -8:-2],
               c.test.images_orig[:, -9:-2, 2:8], c.test.images_orig[:, -9:-2, -8:-2]]
    assert all(max(int(k[i].max()) for k in corners) >= 245 for i in range(12))
