"""The box-policy registry: every registered policy rebuilds, from summary.json alone, the boxes the scorer
used; declarations match what the scorer writes; registration errors are clear."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

import wsl_bench.localize as L
from wsl_bench.heatmaps import bundle_key
from wsl_bench.localize import BoxPolicy, Policy, get_policy, overlaps, policy_names, prepare, register_policy
from wsl_bench.localize import unregister_policy, xywh_to_xyxy
from wsl_bench.metrics import score
from wsl_bench.report.scoring_api import policy_for, predicted_boxes

BUILTIN = ("wang2017", "threshold", "calibrated", "maxboxacc")
LABELS = ("Mass", "Nodule", "Effusion")
SIZE = 96


def tiny_case(n_images=18, seed=0):
    """Blurred blobs near the boxes plus a distractor and noise, 24x24 maps for 96x96 images."""
    rng = np.random.default_rng(seed)
    rows, maps = [], {}
    for i in range(n_images):
        label = LABELS[i % len(LABELS)]
        m = rng.random((24, 24)).astype(np.float32) * 0.3
        for _ in range(1 + i % 2):
            w, h = (int(v) for v in rng.integers(10, 40, 2))
            x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
            rows.append(dict(image_id=f"i{i:02d}", label=label, x=x, y=y, w=w, h=h))
            m[(y + 2) // 4 : (y + h) // 4, x // 4 : (x + w - 3) // 4] += 1.0
        r, c = rng.integers(0, 24, 2)
        m[r, c] += 0.8
        maps[bundle_key(f"i{i:02d}", label)] = ndi.gaussian_filter(m, 1.0)
    patients = {f"i{i:02d}": f"p{i // 2}" for i in range(n_images)}
    return pd.DataFrame(rows), maps, patients


@pytest.fixture(scope="module")
def scored():
    boxes, maps, patients = tiny_case()
    return boxes, maps, {p: score(maps, boxes.copy(), SIZE, policy=p, patients=patients, n_boot=0) for p in BUILTIN}


def test_builtins_are_registered_in_order():
    assert policy_names()[:4] == BUILTIN
    assert L.POLICY_NAMES[:4] == BUILTIN
    with pytest.raises(ValueError, match="unknown policy 'best'; choose one of wang2017, threshold, calibrated, maxboxacc"):
        get_policy("best")


@pytest.mark.parametrize("name", BUILTIN)
def test_from_summary_reproduces_the_boxes_the_scorer_used(scored, name):
    boxes, maps, results = scored
    r = results[name]
    pol = get_policy(name)
    checked = 0
    for (image_id, label), rows in r.per_box.groupby(["image_id", "label"], sort=False):
        applied = pol.from_summary(r.summary, label)
        assert isinstance(applied, BoxPolicy)
        norm, informative = prepare(maps[bundle_key(image_id, label)], (SIZE, SIZE))
        cand = applied.candidates(norm, informative)
        gt = xywh_to_xyxy(rows[["x", "y", "w", "h"]].to_numpy())
        iou, iobb = overlaps(gt, cand.boxes) if len(cand) else (np.zeros((len(gt), 1)), np.zeros((len(gt), 1)))
        assert iou.max(axis=1).tolist() == rows["best_iou"].tolist()
        assert iobb.max(axis=1).tolist() == rows["best_iobb"].tolist()
        if not pol.dataset_level or name == "calibrated":
            assert (rows["n_candidates"] == len(cand)).all()
        if "tau" in rows.columns:  # the per-box tau is the rebuilt policy's
            assert (rows["tau"] == applied.thresholds[0]).all()
        # the report's door rebuilds through the registry too
        assert policy_for(r.summary, label) == applied
        assert predicted_boxes(r.summary, maps[bundle_key(image_id, label)], (SIZE, SIZE), label) == [
            (float(x0), float(y0), float(x1 - x0), float(y1 - y0)) for x0, y0, x1, y1 in cand.boxes]
        checked += len(rows)
    assert checked == len(r.per_box) > 0


@pytest.mark.parametrize("name", BUILTIN)
def test_declarations_match_what_the_scorer_writes(scored, name):
    _, _, results = scored
    r, pol = results[name], get_policy(name)
    assert r.summary["policy"] == name
    for key in pol.summary_keys:
        assert r.summary.get(key) is not None, key
    for col in pol.per_box_columns:
        assert col in r.per_box.columns
    recorded = set(r.summary["policy_options"]) - {"pointing_tolerance", "miou_thresholds", "size_bins"}
    assert recorded == set(pol.recorded_options)
    assert set(pol.recorded_options) <= set(pol.options) | {"sweep_grid"}
    if pol.dataset_level:
        with pytest.raises(NotImplementedError):
            pol.single_map({})
    else:
        assert r.summary["policy_detail"] == pol.single_map({"tau": 0.5, "components": None}).describe()
    for key in pol.fixed_options:
        boxes, maps, _ = tiny_case(4)
        with pytest.raises(ValueError, match=f"policy {name} fixes its own"):
            score(maps, boxes, SIZE, policy=name, n_boot=0, **{key: 0.3 if key == "tau" else "all"})


def test_dataset_level_policies_report_what_they_chose(scored):
    _, _, results = scored
    for name in ("calibrated", "maxboxacc"):
        pol = get_policy(name)
        assert pol.dataset_level and pol.report_table is not None
        rows = pol.chosen(results[name].summary)
        assert {c.label for c in rows} >= set(LABELS)
    for name in ("wang2017", "threshold"):
        assert get_policy(name).report_table is None and get_policy(name).chosen(results[name].summary) == []


def test_missing_class_in_summary_is_a_key_error(scored):
    _, _, results = scored
    for name in ("calibrated", "maxboxacc"):
        with pytest.raises(KeyError, match="no .* threshold for 'Cardiomegaly'"):
            get_policy(name).from_summary(results[name].summary, "Cardiomegaly")
    with pytest.raises(ValueError, match="unknown policy 'gone'.*register that policy"):
        policy_for({"policy": "gone"}, "Mass")


def test_registration_checks_the_protocol():
    with pytest.raises(TypeError, match="Policy subclass with a name"):
        register_policy(int)

    class NoName(Policy):
        pass

    with pytest.raises(TypeError, match="with a name"):
        register_policy(NoName)

    class NoRebuild(Policy):
        name = "no-rebuild"

        def single_map(self, opts):
            return L.threshold(0.5)

    with pytest.raises(TypeError, match="implements from_summary"):
        register_policy(NoRebuild)

    class NoBoxes(Policy):
        name = "no-boxes"

        def from_summary(self, summary, label):
            return L.threshold(0.5)

    with pytest.raises(TypeError, match="implements single_map"):
        register_policy(NoBoxes)

    class Clash(NoRebuild):
        name = "wang2017"

        def from_summary(self, summary, label):
            return L.wang2017()

    with pytest.raises(ValueError, match="registered twice"):
        register_policy(Clash)
    assert "no-rebuild" not in policy_names() and type(get_policy("wang2017")).__name__ == "Wang2017"


def test_a_registered_policy_is_listed_everywhere_until_unregistered():
    class Fixed30(Policy):
        name = "fixed30"

        def single_map(self, opts):
            return L.threshold(0.3)

        def from_summary(self, summary, label):
            return L.threshold(0.3)

    register_policy(Fixed30)
    try:
        assert policy_names()[-1] == "fixed30" and "fixed30" in L.POLICY_NAMES
        from wsl_bench.localize.policies import POLICY_NAMES

        assert "fixed30" in POLICY_NAMES
        boxes, maps, _ = tiny_case(4)
        r = score(maps, boxes, SIZE, policy="fixed30", n_boot=0)
        assert r.summary["policy_detail"] == {"name": "threshold", "thresholds": [0.3], "components": "all"}
    finally:
        unregister_policy("fixed30")
    assert "fixed30" not in policy_names()
    with pytest.raises(ValueError, match="unknown policy 'fixed30'"):
        score(maps, boxes, SIZE, policy="fixed30", n_boot=0)
