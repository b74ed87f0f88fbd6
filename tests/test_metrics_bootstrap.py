"""Patient-level bootstrap: the vectorised replicates equal an explicit resampling loop."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from wsl_bench.metrics import paired_bootstrap
from wsl_bench.metrics.bootstrap import grouped_replicates, resample_counts
from wsl_bench.metrics.classification import auroc_summary, weighted_auroc


def _table(n=60, p_hit=0.6, seed=0, labels=("Mass", "Nodule", "Effusion")):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
            "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0,
            "patient_id": [f"p{i // 3}" for i in range(n)],
            "iou_hit_0.5": rng.random(n) < p_hit,
        }
    )


def test_vectorised_replicates_match_an_explicit_loop():
    rng = np.random.default_rng(1)
    n, units_n, classes_n = 40, 12, 3
    units = rng.integers(0, units_n, n)
    units[:units_n] = np.arange(units_n)
    classes = rng.integers(0, classes_n, n)
    values = rng.random((n, 2))
    values[3, 1] = np.nan
    counts = resample_counts(units_n, 25, seed=4)
    per_class, macro, micro = grouped_replicates(values, units, classes, classes_n, counts)
    for b in range(25):
        idx = np.concatenate([np.flatnonzero(units == u) for u in range(units_n) for _ in range(int(counts[b, u]))])
        v, c = values[idx], classes[idx]
        for m in range(2):
            ok = np.isfinite(v[:, m])
            means = [np.mean(v[ok & (c == k), m]) if (ok & (c == k)).any() else np.nan for k in range(classes_n)]
            np.testing.assert_allclose(per_class[b, :, m], means)
            np.testing.assert_allclose(macro[b, m], np.nanmean(means))
            np.testing.assert_allclose(micro[b, m], v[ok, m].mean())


def test_resample_counts_are_seeded_and_sum_to_n():
    a, b = resample_counts(30, 100, 7), resample_counts(30, 100, 7)
    assert (a == b).all() and (a.sum(axis=1) == 30).all()
    assert not (a == resample_counts(30, 100, 8)).all()


def test_paired_bootstrap_identical_and_clearly_different_methods():
    a = _table(p_hit=0.5, seed=0)
    same = paired_bootstrap(a, a.copy(), "iou_acc@0.5", n_boot=300)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0
    b = a.copy()
    b["iou_hit_0.5"] = False
    better = paired_bootstrap(a, b, "iou_acc@0.5", n_boot=500, seed=2)
    assert better["diff"] == pytest.approx(a["iou_hit_0.5"].groupby(a["label"]).mean().mean())
    assert better["ci"][0] > 0 and better["p_value"] < 0.01 and better["n_units"] == 20
    micro = paired_bootstrap(a, b, "iou_hit_0.5", aggregate="micro", n_boot=100)
    assert micro["a"] == pytest.approx(a["iou_hit_0.5"].mean())


def test_paired_bootstrap_rejects_different_boxes_and_unknown_metrics():
    a = _table()
    with pytest.raises(ValueError, match="differ in"):
        paired_bootstrap(a, a.iloc[1:], "iou_acc@0.5")
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(a, a, "iou_acc@0.55")
    with pytest.raises(ValueError, match="aggregate"):
        paired_bootstrap(a, a, "iou_acc@0.5", aggregate="Hernia")


def test_weighted_auroc_equals_sklearn_with_ties_and_replication():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(200), 1)  # many ties
    y = rng.random(200) < 0.3
    assert weighted_auroc(s, y, np.ones((1, 200)))[0] == pytest.approx(roc_auc_score(y, s))
    w = rng.integers(0, 3, 200)
    idx = np.repeat(np.arange(200), w)
    assert weighted_auroc(s, y, w[None].astype(float))[0] == pytest.approx(roc_auc_score(y[idx], s[idx]))


def test_auroc_summary_per_finding_and_mean():
    rng = np.random.default_rng(3)
    ids = [f"i{i}" for i in range(300)]
    labels = pd.DataFrame({"Mass": rng.random(300) < 0.3, "Nodule": rng.random(300) < 0.2}, index=ids).astype(float)
    probs = pd.DataFrame({"Mass": labels["Mass"] + rng.normal(0, 0.5, 300), "Nodule": rng.random(300)}, index=ids)
    out = auroc_summary(probs, labels, n_boot=200)
    assert out["per_class"]["Mass"] == pytest.approx(roc_auc_score(labels["Mass"], probs["Mass"]))
    assert out["mean"] == pytest.approx(np.mean(list(out["per_class"].values())))
    lo, hi = out["ci"]["Mass"]
    assert lo < out["per_class"]["Mass"] < hi and out["ci"]["mean"][0] < out["mean"] < out["ci"]["mean"][1]


def test_paired_bootstrap_on_two_scored_methods():
    from wsl_bench.metrics import score

    rng = np.random.default_rng(0)
    rows, good, noise = [], {}, {}
    for i in range(30):
        x, y = rng.integers(0, 150, 2)
        rows.append(dict(image_id=f"i{i}", label=["Mass", "Nodule"][i % 2], x=int(x), y=int(y), w=60, h=60))
        m = np.zeros((32, 32), np.float32)
        m[y // 8 : (y + 60) // 8, x // 8 : (x + 60) // 8] = 1
        good[f"i{i}::{rows[-1]['label']}"] = m
        noise[f"i{i}::{rows[-1]['label']}"] = rng.random((32, 32)).astype(np.float32)
    boxes = pd.DataFrame(rows)
    patients = {f"i{i}": f"p{i // 3}" for i in range(30)}
    a = score(good, boxes, 256, patients=patients, n_boot=0).per_box
    b = score(noise, boxes, 256, patients=patients, n_boot=0).per_box
    res = paired_bootstrap(a, b, "iou_acc@0.3", n_boot=400, seed=0)
    assert res["n_units"] == 10 and res["diff"] > 0.5 and res["ci"][0] > 0 and res["p_value"] < 0.01


def test_score_restores_thread_settings():
    import torch

    from wsl_bench.localize.maps import single_thread

    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
