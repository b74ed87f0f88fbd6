"""Known answers for the sanity instruments (wsl_bench.metrics.sanity, wsl_bench.metrics.randomization)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from wsl_bench.heatmaps import bundle_key, write_bundle
from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.metrics import paired_bootstrap, score
from wsl_bench.metrics.randomization import cascade_sizes, parameterised_layers, randomization_record
from wsl_bench.metrics.sanity import (
    CHANCE,
    box_mass,
    box_masses,
    class_specificity,
    gain_over_guess,
    mean_pairwise_correlation,
    prior_correlation,
    randomization_summary,
    rank_correlation,
    right_class_credit,
    sanity_summary,
    shared_floor,
)

SIZE = 64


def _cohort(n_images: int = 24, seed: int = 0) -> pd.DataFrame:
    """Boxes of every finding, two per image, on a 4x4 grid of 16-px cells (no two boxes overlap)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        cells = rng.choice(16, size=2, replace=False)
        labels = rng.choice(len(BOX_FINDINGS), size=2, replace=False)
        for cell, lab in zip(cells, labels):
            y, x = divmod(int(cell), 4)
            rows.append({"image_id": f"img{i:03d}", "label": BOX_FINDINGS[lab], "x": 16.0 * x + 2, "y": 16.0 * y + 2,
                         "w": 12.0, "h": 12.0})
    return pd.DataFrame(rows)


def _box_maps(boxes: pd.DataFrame, grid: int = 32) -> dict[str, np.ndarray]:
    """Class c's map of an image is the filled union of that image's class-c boxes (zero elsewhere)."""
    maps = {}
    f = grid / SIZE
    for image_id, g in boxes.groupby("image_id"):
        for lab in BOX_FINDINGS:
            m = np.zeros((grid, grid), np.float32)
            for r in g[g["label"] == lab].itertuples():
                m[int(r.y * f): int((r.y + r.h) * f), int(r.x * f): int((r.x + r.w) * f)] = 1.0
            maps[bundle_key(image_id, lab)] = m
    return maps


def _prior_maps(boxes: pd.DataFrame, prior: np.ndarray) -> dict[str, np.ndarray]:
    return {bundle_key(i, lab): prior for i in boxes["image_id"].unique() for lab in BOX_FINDINGS}


def _per_box(maps, boxes, n_boot=200):
    return score(maps, boxes.copy(), SIZE, n_boot=n_boot).per_box


def _gaussian(size=16):
    ax = np.linspace(-1, 1, size)
    return np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2)).astype(np.float32)


# -- small pieces ---------------------------------------------------------------------------------


def test_rank_correlation_known_answers():
    a = np.arange(16.0).reshape(4, 4)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.exp(a)) == pytest.approx(1.0)  # monotone rescaling changes nothing
    assert rank_correlation(np.ones((4, 4)), np.ones((4, 4))) == 1.0
    assert rank_correlation(np.ones((4, 4)), a) == 0.0
    assert mean_pairwise_correlation([a, a, a]) == pytest.approx(1.0)
    assert mean_pairwise_correlation([a, -a]) == pytest.approx(-1.0)
    flat = np.zeros((4, 4))
    assert mean_pairwise_correlation([flat, flat, flat]) == 1.0
    assert mean_pairwise_correlation([a, flat, flat]) == 0.0  # the flat pair is skipped


def test_rank_correlation_matches_scipy_spearman_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=(8, 8)).astype(float)  # many ties
    b = a + rng.normal(size=(8, 8))
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0])


def _with_margin(a: np.ndarray, k: int = 1) -> np.ndarray:
    """A map with a border of width `k` set to its minimum (AFLoc's margin, for example)."""
    a = np.array(a, dtype=np.float64)
    lo = a.min()
    a[:k, :], a[-k:, :], a[:, :k], a[:, -k:] = lo, lo, lo, lo
    return a


def test_shared_floor_known_answers():
    rng = np.random.default_rng(0)
    maps = [_with_margin(rng.normal(size=(6, 6))) for _ in range(3)]
    border = np.ones((6, 6), dtype=bool)
    border[1:-1, 1:-1] = False
    assert np.array_equal(shared_floor(maps), border)
    assert shared_floor([np.zeros((3, 3)), np.zeros((3, 3))]).all()  # flat maps hold every cell at their minimum
    a = np.arange(16.0).reshape(4, 4)
    assert not shared_floor([a, -a]).any()  # their minima are at different cells
    tiny = np.arange(16.0).reshape(4, 4) * 1e-12  # a gradient map of tiny range: only its minimum is floor
    assert shared_floor([tiny]).sum() == 1
    broken = maps[0].copy()
    broken[2, 2] = np.nan
    assert np.array_equal(shared_floor([*maps, broken]), border)  # a non-finite map is passed over
    assert not shared_floor([broken]).any()


def test_rank_correlation_leaves_out_the_given_floor():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(4)
    a, b = _with_margin(rng.normal(size=(8, 8))), _with_margin(rng.normal(size=(8, 8)))
    floor = shared_floor([a, b])
    inner = (slice(1, -1), slice(1, -1))
    assert rank_correlation(a, b, floor=floor) == pytest.approx(spearmanr(a[inner].ravel(), b[inner].ravel())[0])
    assert rank_correlation(a, a, floor=floor) == pytest.approx(1.0)
    flat = np.zeros((8, 8))
    assert rank_correlation(flat, flat, floor=shared_floor([flat, flat])) == 1.0  # nothing left: the flat rule


def test_independent_maps_with_a_shared_margin_do_not_correlate():
    """The imposed border ties every map at its lowest rank; left out, independent maps correlate ~0."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(5)
    images = [[_with_margin(gaussian_filter(rng.normal(size=(14, 14)), 1.0)) for _ in range(4)] for _ in range(200)]
    floor = shared_floor(m for maps in images for m in maps)
    assert floor.sum() == 14 * 14 - 12 * 12
    plain = [rank_correlation(maps[0], maps[1]) for maps in images]
    floored = [rank_correlation(maps[0], maps[1], floor=floor) for maps in images]
    pairwise_plain = [mean_pairwise_correlation(maps) for maps in images]
    pairwise = [mean_pairwise_correlation(maps, floor=floor) for maps in images]
    assert np.mean(plain) > 0.5 and np.mean(pairwise_plain) > 0.5  # what the margin alone gives
    assert abs(np.mean(floored)) < 0.05 and abs(np.mean(pairwise)) < 0.05


def test_zeros_at_independent_cells_are_no_floor():
    """ReLU zeros fall at other cells in other maps: over many maps no cell is floor, so nothing is biased."""
    rng = np.random.default_rng(6)
    images = [[np.maximum(rng.normal(size=(10, 10)), 0) for _ in range(2)] for _ in range(50)]
    floor = shared_floor(m for maps in images for m in maps)
    assert not floor.any()
    values = [rank_correlation(a, b, floor=floor) for a, b in images]
    assert abs(np.mean(values)) < 0.05


def test_box_mass_known_answers():
    uniform = np.ones((8, 8))
    assert box_mass(uniform, (0, 0, 32, 64), (64, 64)) == pytest.approx(0.5)
    peak = np.zeros((8, 8))
    peak[2, 3] = 1.0  # the cell covering x in [24, 32), y in [16, 24) of a 64-px image
    assert box_mass(peak, (24, 16, 8, 8), (64, 64)) == pytest.approx(1.0)
    assert box_mass(peak, (24, 16, 4, 8), (64, 64)) == pytest.approx(0.5)  # half of the cell
    assert box_mass(peak, (0, 0, 8, 8), (64, 64)) == pytest.approx(0.0)
    maps = [peak, uniform, peak * 3 + 1]
    assert np.allclose(box_masses(maps, (24, 16, 4, 8), (64, 64)),
                       [box_mass(m, (24, 16, 4, 8), (64, 64)) for m in maps])


def test_right_class_credit_counts_ties_as_chance():
    assert right_class_credit(np.full(8, 0.3), 2) == pytest.approx(1 / 8)
    assert right_class_credit(np.array([0.1, 0.5, 0.5, 0.2]), 1) == pytest.approx(0.5)
    assert right_class_credit(np.array([0.1, 0.5, 0.4]), 2) == 0.0
    assert right_class_credit(np.array([0.9, 0.5, 0.4]), 0) == 1.0


# -- instruments on bundles -----------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["center", "lung-like"])
def test_a_prior_is_one_map_for_every_class(prior):
    boxes = _cohort()
    m = _gaussian() if prior == "center" else np.pad(np.ones((8, 4)), ((4, 4), (2, 10)))
    maps = _prior_maps(boxes, m)
    per_box = _per_box(maps, boxes)
    cs = class_specificity(maps, per_box, lambda i: (SIZE, SIZE), n_boot=200)
    assert cs["class_correlation"]["mean"] == pytest.approx(1.0)
    assert cs["right_class_rate"]["macro"]["rate"] == CHANCE
    assert all(v["rate"] == CHANCE for v in cs["right_class_rate"]["per_class"].values())
    assert cs["n_images_not_computed"] == 0


def test_filled_box_maps_get_right_class_rate_one():
    boxes = _cohort()
    maps = _box_maps(boxes)
    per_box = _per_box(maps, boxes)
    cs = class_specificity(maps, per_box, lambda i: (SIZE, SIZE), n_boot=200)
    assert cs["right_class_rate"]["macro"]["rate"] == 1.0
    assert cs["right_class_rate"]["macro"]["ci"] == [1.0, 1.0]
    assert cs["class_correlation"]["mean"] <= 0.0


def test_random_maps_right_class_rate_is_chance_within_ci():
    boxes = _cohort(n_images=120, seed=1)
    rng = np.random.default_rng(0)
    maps = {bundle_key(i, lab): rng.random((16, 16)).astype(np.float32)
            for i in boxes["image_id"].unique() for lab in BOX_FINDINGS}
    per_box = _per_box(maps, boxes)
    rate = class_specificity(maps, per_box, lambda i: (SIZE, SIZE), n_boot=500)["right_class_rate"]["macro"]
    assert rate["ci"][0] <= CHANCE <= rate["ci"][1]


def test_class_correlation_of_independent_maps_with_a_margin_is_about_zero():
    boxes = _cohort(n_images=60, seed=2)
    rng = np.random.default_rng(1)
    maps = {bundle_key(i, lab): _with_margin(rng.random((14, 14))).astype(np.float32)
            for i in boxes["image_id"].unique() for lab in BOX_FINDINGS}
    per_box = _per_box(maps, boxes)
    corr = class_specificity(maps, per_box, lambda i: (SIZE, SIZE), n_boot=200)["class_correlation"]
    assert corr["ci"][0] <= 0.0 <= corr["ci"][1]  # the shared border (27 % of the cells) alone would give ~0.5


def test_class_correlation_floor_is_taken_over_every_image():
    """Sparse ReLU maps share zeros within one image by chance (0.84^8 of the cells); over many images no
    cell is floor, so the class correlation of independent maps stays ~0 instead of turning negative."""
    boxes = _cohort(n_images=60, seed=3)
    rng = np.random.default_rng(2)
    maps = {bundle_key(i, lab): np.maximum(rng.normal(size=(10, 10)) - 1.0, 0).astype(np.float32)
            for i in boxes["image_id"].unique() for lab in BOX_FINDINGS}
    per_box = _per_box(maps, boxes)
    corr = class_specificity(maps, per_box, lambda i: (SIZE, SIZE), n_boot=200)["class_correlation"]
    assert corr["floor_share"] == 0.0
    assert corr["ci"][0] <= 0.0 <= corr["ci"][1]
    one = next(iter(boxes["image_id"].unique()))
    per_image_floor = shared_floor(maps[bundle_key(one, lab)] for lab in BOX_FINDINGS)
    assert per_image_floor.any()  # what a floor per image would have left out


def test_missing_class_maps_are_not_computed_and_counted():
    boxes = _cohort()
    maps = _box_maps(boxes)
    drop = [bundle_key(i, lab) for i in ("img000", "img001") for lab in BOX_FINDINGS
            if not ((boxes["image_id"] == i) & (boxes["label"] == lab)).any()]
    for k in drop:
        maps.pop(k)
    per_box = _per_box(maps, boxes)
    cs = class_specificity(maps, per_box, lambda i: (SIZE, SIZE), n_boot=100)
    assert cs["n_images_not_computed"] == 2
    assert "2 of 24" in cs["not_computed_reason"]
    assert cs["right_class_rate"]["n_boxes_not_computed"] == 4
    assert cs["right_class_rate"]["macro"]["rate"] == 1.0  # computed only where every map exists

    only_own = {k: v for k, v in maps.items() if k in {bundle_key(i, l) for i, l in zip(boxes.image_id, boxes.label)}}
    cs = class_specificity(only_own, per_box, lambda i: (SIZE, SIZE), n_boot=100)
    assert cs["n_images"] == 0 and cs["n_images_not_computed"] == 24
    assert cs["right_class_rate"] is None and cs["class_correlation"] is None


def test_prior_correlation_of_a_prior_with_itself_is_one():
    boxes = _cohort()
    g = _gaussian()
    maps = _prior_maps(boxes, g)
    per_box = _per_box(maps, boxes)
    out = prior_correlation(maps, per_box, {"prior-center": g, "flipped": -g}, n_boot=100)
    assert out["prior-center"]["mean"] == pytest.approx(1.0)
    assert out["flipped"]["mean"] == pytest.approx(-1.0)


def test_gain_over_guess_matches_paired_bootstrap():
    boxes = _cohort(n_images=40, seed=2)
    method = _per_box(_box_maps(boxes), boxes)
    refs = {"center": _per_box(_prior_maps(boxes, _gaussian()), boxes),
            "flat": _per_box(_prior_maps(boxes, np.ones((4, 4), np.float32)), boxes)}
    gain = gain_over_guess(method, refs, iou_thresholds=[0.1, 0.3], n_boot=300, seed=5)
    rows = {(r["scope"], r["label"], r["threshold"]): r for r in gain["rows"]}
    for scope, label in (("macro", "macro"), ("class", method["label"].iloc[0])):
        row = rows[(scope, label, "0.3")]
        ref = refs[row["best_reference"]]
        expect = paired_bootstrap(method, ref, metric="iou_acc@0.3", aggregate=label, n_boot=300, seed=5)
        assert row["diff"] == pytest.approx(expect["diff"])
        assert row["ci"] == pytest.approx(expect["ci"])
        assert row["p_value"] == pytest.approx(expect["p_value"])
        others = [n for n in refs if n != row["best_reference"]]
        for n in others:  # the chosen reference is the best one in that cell
            acc = paired_bootstrap(method, refs[n], metric="iou_acc@0.3", aggregate=label, n_boot=1)["b"]
            assert row["reference"] >= acc
    assert rows[("macro", "macro", "0.3")]["diff"] > 0  # exact box maps beat any guess
    assert rows[("macro", "macro", "0.3")]["p_value"] < 0.05
    assert {r["scope"] for r in gain["rows"]} >= {"macro", "class", "size_bin"}


def test_gain_over_guess_refuses_different_boxes():
    boxes = _cohort()
    a = _per_box(_box_maps(boxes), boxes)
    with pytest.raises(ValueError, match="differ"):
        gain_over_guess(a, {"r": a.iloc[:-1]}, iou_thresholds=[0.3], n_boot=10)
    assert gain_over_guess(a, {}, iou_thresholds=[0.3]) is None


def test_tied_guesses_go_to_prior_center_whatever_the_order_given():
    boxes = _cohort()
    method = _per_box(_box_maps(boxes), boxes)
    guess = _per_box(_prior_maps(boxes, _gaussian()), boxes)
    for refs in ({"prior-lung": guess, "prior-center": guess}, {"prior-center": guess, "prior-lung": guess}):
        gain = gain_over_guess(method, refs, iou_thresholds=[0.3], n_boot=10)
        assert gain["references"] == ["prior-center", "prior-lung"]
        assert {r["best_reference"] for r in gain["rows"]} == {"prior-center"}


def test_sanity_summary_shape_and_roles():
    boxes = _cohort()
    g = _gaussian()
    maps = _prior_maps(boxes, g)
    per_box = _per_box(maps, boxes)
    s = sanity_summary(maps, per_box, lambda i: (SIZE, SIZE), iou_thresholds=[0.3], name="prior-center",
                       references={"prior-center": per_box}, prior_maps={"prior-center": g}, n_boot=50)
    assert s["role"] == "guess" and s["gain_over_guess"] is None  # never compared with itself
    assert s["randomization"]["status"] == "skipped"
    json.dumps(s)  # summary.json material


# -- randomisation ---------------------------------------------------------------------------------


class _NetMethod:
    """A tiny CAM-like method: maps are the first conv's response, so they depend on the weights."""

    def __init__(self, use_weights: bool):
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 1))
        self.use_weights = use_weights

    def explain(self, images, classes):
        if not self.use_weights:  # an explainer that ignores the model: an edge map of the image
            edges = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs()[:, :, :, :-1]
            return edges.expand(-1, len(classes), -1, -1)
        with torch.no_grad():
            return self.net(images)[:, list(classes)]


def test_randomization_of_an_explainer_that_ignores_its_weights_is_one():
    images = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    rec = randomization_record(_NetMethod(False), images, range(8), ["a", "b", "c"])
    assert np.allclose(rec["correlation"], 1.0)
    assert [d["name"] for d in rec["depths"]] == ["head", "half", "all"]


def test_randomization_of_a_weight_dependent_explainer_drops():
    images = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    method = _NetMethod(True)
    trained = method.net
    rec = randomization_record(method, images, range(8), ["a", "b", "c"], seed=3)
    corr = np.asarray(rec["correlation"])
    assert corr.shape == (3, 3)
    assert corr[:, -1].mean() < 0.9
    assert method.net is not trained  # the trained network itself was never modified
    again = randomization_record(_NetMethod(True), images, range(8), ["a", "b", "c"], seed=3)
    assert again["correlation"] == rec["correlation"]  # seeded: reproducible


class _MarginMethod(_NetMethod):
    """`_NetMethod` whose maps carry a zeroed one-cell border, whatever the weights."""

    def explain(self, images, classes):
        maps = super().explain(images, classes).clone()
        lo = maps.amin(dim=(2, 3), keepdim=True).expand_as(maps)
        border = torch.ones(maps.shape[-2:], dtype=torch.bool)
        border[1:-1, 1:-1] = False
        return torch.where(border, lo, maps)


def test_randomization_leaves_out_the_border_every_map_shares():
    images = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    trained = _MarginMethod(True).explain(images, range(8)).numpy()
    rec = randomization_record(_MarginMethod(True), images, range(8), ["a", "b"], seed=3)
    assert rec["floor"] == "shared"
    assert np.allclose(rec["floor_share"], 1 - 100 / 144)  # the border: 44 of 144 cells, in every map of both images
    rand_method = _MarginMethod(True)
    randomization_record(rand_method, images, range(8), ["a", "b"], seed=3)  # leaves it holding the "all" copy
    rand = rand_method.explain(images, range(8)).numpy()
    inner = (slice(1, -1), slice(1, -1))
    expected = [np.mean([rank_correlation(trained[i, c][inner], rand[i, c][inner]) for c in range(8)]) for i in range(2)]
    assert np.allclose(np.asarray(rec["correlation"])[:, -1], expected)
    unmoved = randomization_record(_MarginMethod(False), images, range(8), ["a", "b"])
    assert np.allclose(unmoved["correlation"], 1.0)  # an explainer that ignores its weights still reads 1


class _TrainedMarginMethod(_MarginMethod):
    """The border is set only by the trained network: re-initialised maps keep theirs, so no floor is shared."""

    def explain(self, images, classes):
        if getattr(self, "trained_net", None) is None:
            self.trained_net = self.net
        if self.net is self.trained_net:
            return super().explain(images, classes)
        return _NetMethod.explain(self, images, classes)


def test_randomization_has_no_floor_when_the_reinitialised_maps_lack_it():
    images = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    rec = randomization_record(_TrainedMarginMethod(True), images, range(8), ["a", "b"], seed=3)
    assert np.allclose(rec["floor_share"], 0.0)


def test_randomization_summary_passes_the_floor_through():
    record = {"image_ids": ["a", "b"], "depths": [{"name": "all", "fraction": 1.0, "layers": 3}],
              "correlation": [[0.1], [0.3]], "floor": "shared", "floor_share": [[0.25], [0.25]], "seed": 0}
    s = randomization_summary(record, n_boot=0)
    assert s["floor"] == "shared" and s["depths"][0]["floor_share"] == 0.25 and s["depths"][0]["mean"] == pytest.approx(0.2)
    older = {k: v for k, v in record.items() if k not in ("floor", "floor_share")}  # made before the floor existed
    s = randomization_summary(older, n_boot=0)
    assert s["floor"] == "none" and s["depths"][0]["floor_share"] is None


def test_cascade_goes_from_the_head_down():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.Flatten(), nn.Linear(8, 3))
    names = [n for n, _ in parameterised_layers(net)]
    assert names == ["4", "2", "0"]
    assert cascade_sizes(3) == [1, 2, 3]
    assert cascade_sizes(10) == [1, 5, 10]
    with pytest.raises(ValueError, match="no network"):
        randomization_record(object(), torch.zeros(1, 1, 4, 4), [0], ["a"])


# -- through the harness ---------------------------------------------------------------------------


@pytest.mark.slow
def test_run_writes_sanity_for_every_method(tmp_path):
    from wsl_bench.run import build_config, execute

    cfg = build_config(["gradcam"], preset="tiny", overrides={"score": {"sanity_images": 4}})
    execute(cfg, tmp_path / "run", log=lambda m: None)
    for name in ("gradcam", "prior-center", "prior-lung", "random"):
        s = json.loads((tmp_path / "run" / "scores" / name / "summary.json").read_text())["sanity"]
        assert s["class_specificity"]["n_images"] > 0
        if name.startswith("prior"):
            assert s["role"] == "guess"
            assert s["class_specificity"]["right_class_rate"]["macro"]["rate"] == CHANCE
    g = json.loads((tmp_path / "run" / "scores" / "gradcam" / "summary.json").read_text())["sanity"]
    assert g["randomization"]["status"] == "computed" and g["randomization"]["n_images"] == 4
    assert g["randomization"]["depths"][-1]["mean"] < 0.95  # a destroyed ResNet draws other maps
    assert set(g["gain_over_guess"]["references"]) == {"prior-center", "prior-lung"}
    assert set(g["prior_correlation"]) == {"prior-center", "prior-lung"}


def test_score_cli_adds_sanity_and_skips_randomization(tmp_path):
    from typer.testing import CliRunner

    from wsl_bench.cli import app

    boxes = _cohort(n_images=12)
    maps = _box_maps(boxes)
    write_bundle(tmp_path / "b.npz", maps, {i: (SIZE, SIZE) for i in boxes["image_id"].unique()})
    boxes.to_csv(tmp_path / "boxes.csv", index=False)
    res = CliRunner().invoke(app, ["score", "--heatmaps", str(tmp_path / "b.npz"), "--boxes", str(tmp_path / "boxes.csv"),
                                   "--out", str(tmp_path / "s"), "--n-boot", "50", "--no-progress"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "s" / "summary.json").read_text())["sanity"]
    assert s["randomization"]["status"] == "skipped" and "outside a run" in s["randomization"]["reason"]
    assert s["class_specificity"]["right_class_rate"]["macro"]["rate"] == 1.0
    assert set(s["gain_over_guess"]["references"]) == {"prior-lung", "prior-center"}


@pytest.mark.slow
def test_instruments_run_on_nih_layout_data_without_the_ceiling(demo_method, tmp_path):
    from wsl_bench.data.export import export_nih_layout
    from wsl_bench.run import build_config, execute

    export_nih_layout(tmp_path / "nih", n=80, size=64, seed=0)
    cfg = build_config([demo_method], data="nih", root=str(tmp_path / "nih"), preset="tiny",
                       overrides={"score": {"n_boot": 20, "sanity_images": 3}, "report": {"full": False}})
    assert "oracle-seg" not in cfg["methods_order"]  # NIH has no lesion masks: no supervised ceiling
    execute(cfg, tmp_path / "run", log=lambda m: None)
    for name in cfg["methods_order"]:
        s = json.loads((tmp_path / "run" / "scores" / name / "summary.json").read_text())["sanity"]
        assert s["class_specificity"]["n_images"] > 0
        assert set(s["prior_correlation"]) == {"prior-center", "prior-lung"}
    s = json.loads((tmp_path / "run" / "scores" / demo_method / "summary.json").read_text())["sanity"]
    assert s["role"] == "method" and s["gain_over_guess"]["rows"]
    assert s["randomization"]["status"] == "computed" and s["randomization"]["n_images"] == 3


def test_randomization_uses_given_trained_maps():
    images = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    trained = _NetMethod(True).explain(images, range(8)).numpy()
    a = randomization_record(_NetMethod(True), images, range(8), ["a", "b"], seed=3)
    b = randomization_record(_NetMethod(True), images, range(8), ["a", "b"], seed=3, trained=trained)
    assert a["correlation"] == b["correlation"]
