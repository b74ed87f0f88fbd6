"""The `score` API: known answers under every policy, schema, files, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsl_bench.heatmaps import bundle_key
from wsl_bench.metrics import score

POLICIES = ["wang2017", "threshold", "calibrated", "maxboxacc"]
LABELS = ["Atelectasis", "Cardiomegaly", "Mass", "Nodule"]


def _rect_map(box, size=256, value=1.0):
    x, y, w, h = box
    m = np.zeros((size, size), np.float32)
    m[y : y + h, x : x + w] = value
    return m


def perfect_case(n_images=12, size=256, seed=0):
    rng = np.random.default_rng(seed)
    rows, maps = [], {}
    for i in range(n_images):
        lab = LABELS[i % len(LABELS)]
        w, h = rng.integers(10, 80, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        rows.append(dict(image_id=f"img{i:03d}.png", label=lab, x=int(x), y=int(y), w=int(w), h=int(h)))
        maps[bundle_key(f"img{i:03d}.png", lab)] = _rect_map((x, y, w, h), size)
    patients = {r["image_id"]: f"p{i // 2}" for i, r in enumerate(rows)}
    return pd.DataFrame(rows), maps, patients


@pytest.mark.parametrize("policy", POLICIES)
def test_filled_rectangle_scores_iou_one_under_every_policy(policy):
    boxes, maps, patients = perfect_case()
    r = score(maps, boxes, 256, policy=policy, patients=patients, n_boot=50)
    assert len(r.per_box) > 0
    assert (r.per_box["best_iou"] == 1.0).all() and (r.per_box["best_iobb"] == 1.0).all()
    assert r.per_box["pointing_hit"].all() and (r.per_box["miou"] == 1.0).all()
    assert all(v == 1.0 for v in r.summary["iou_acc"]["macro"].values())
    assert r.summary["policy"] == policy


def test_half_width_shift_gives_exactly_one_third():
    boxes = pd.DataFrame([dict(image_id="a", label="Mass", x=40, y=30, w=64, h=50)])
    maps = {"a::Mass": _rect_map((72, 30, 64, 50))}
    for policy in ("wang2017", "threshold", "maxboxacc"):
        r = score(maps, boxes, 256, policy=policy, n_boot=0)
        assert r.per_box["best_iou"].iloc[0] == 1 / 3
        assert r.per_box["best_iobb"].iloc[0] == 0.5
        hits = r.summary["iou_acc"]["Mass"]
        assert hits["0.3"] == 1.0 and hits["0.4"] == 0.0


def test_prediction_inside_the_box_has_iobb_one():
    boxes = pd.DataFrame([dict(image_id="a", label="Effusion", x=20, y=20, w=100, h=100)])
    r = score({"a::Effusion": _rect_map((50, 60, 10, 20))}, boxes, 256, n_boot=0)
    row = r.per_box.iloc[0]
    assert row["best_iobb"] == 1.0 and row["best_iou"] == pytest.approx(200 / 10000)
    assert all(v == 1.0 for v in r.summary["iobb_acc"]["Effusion"].values())


def test_constant_zero_and_single_pixel_maps_have_defined_outcomes():
    boxes = pd.DataFrame(
        [dict(image_id=i, label="Nodule", x=100, y=100, w=20, h=20) for i in ("zero", "const", "pix", "pixout", "pix32")]
    )
    single = np.zeros((256, 256), np.float32)
    single[110, 105] = 5.0
    outside = np.zeros((256, 256), np.float32)
    outside[10, 10] = 1.0
    coarse = np.zeros((32, 32), np.float32)
    coarse[13, 13] = 1.0  # the cell covering pixels 104..111
    maps = {
        "zero::Nodule": np.zeros((16, 16)),
        "const::Nodule": np.full((16, 16), 0.7),
        "pix::Nodule": single,
        "pixout::Nodule": outside,
        "pix32::Nodule": coarse,
    }
    pb = score(maps, boxes, 256, n_boot=0).per_box.set_index("image_id")
    for k in ("zero", "const"):  # no location: no candidate, no pointing hit, a miss everywhere
        assert pb.loc[k, "n_candidates"] == 0 and pb.loc[k, "best_iou"] == 0 and not pb.loc[k, "pointing_hit"]
        assert pb.loc[k, "miou"] == 0 and np.isnan(pb.loc[k, "cnr"])
    # one bright pixel at native resolution: a 1x1 box at that pixel
    assert pb.loc["pix", "best_iobb"] == 1.0 and pb.loc["pix", "best_iou"] == 1 / 400
    assert pb.loc["pix", "pointing_hit"] and not pb.loc["pixout", "pointing_hit"]
    assert pb.loc["pixout", "best_iou"] == 0
    # one bright cell of a coarse map: a blob around that cell, inside the box
    assert pb.loc["pix32", "pointing_hit"] and pb.loc["pix32", "best_iobb"] == 1.0


def test_several_boxes_per_map_are_each_scored_and_afp_counts_extra_blobs():
    boxes = pd.DataFrame(
        [dict(image_id="a", label="Mass", x=10, y=10, w=40, h=40), dict(image_id="a", label="Mass", x=150, y=150, w=50, h=30)]
    )
    m = _rect_map((10, 10, 40, 40)) + _rect_map((150, 150, 50, 30)) + _rect_map((100, 10, 20, 20))
    r = score({"a::Mass": m}, boxes, 256, n_boot=0)
    assert (r.per_box["best_iou"] == 1.0).all() and len(r.per_box) == 2
    assert r.summary["afp"]["Mass"]["0.1"] == 2.0  # the stray blob, at thresholds 60 and 180
    assert r.summary["n_maps_scored"] == 1


def test_summary_schema_and_files(tmp_path):
    boxes, maps, patients = perfect_case(n_images=16)
    maps["extra.png::Mass"] = np.ones((4, 4))
    r = score(maps, boxes, 256, patients=patients, n_boot=200, seed=3, out_dir=tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    pb = pd.read_csv(tmp_path / "per_box.csv")
    for col in ["image_id", "label", "x", "y", "w", "h", "size_bin", "best_iou", "best_iobb", "pointing_hit"]:
        assert col in pb.columns
    assert len(pb) == s["n_boxes"] == 16 and s["policy"] == "wang2017"
    for lab in LABELS + ["macro", "micro"]:
        assert set(s["iou_acc"][lab]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}
        assert set(s["iobb_acc"][lab]) == {"0.1", "0.25", "0.5", "0.75", "0.9"}
        lo, hi = s["ci"]["iou_acc"][lab]["0.5"]
        assert lo <= s["iou_acc"][lab]["0.5"] <= hi
    assert set(s["by_size"]) == {"small", "medium", "large"}
    assert sum(v["n_boxes"] for v in s["by_size"].values()) == 16
    for b, v in s["by_size"].items():
        if v["n_boxes"]:
            assert v["iou_acc"]["macro"]["0.1"] == 1.0
    assert s["n_maps_without_boxes"] == 1 and s["maps_without_boxes_examples"] == ["extra.png::Mass"]
    assert s["bootstrap"]["unit"] == "patient" and s["bootstrap"]["n_units"] == 8
    assert r.summary == s
    from wsl_bench.metrics import summarize_boxes

    again = summarize_boxes(pb, n_boot=200, seed=3)  # every box number is recomputable from the table
    for k in ("iou_acc", "iobb_acc", "pointing", "miou", "ci", "by_size", "afp"):
        assert again[k] == s[k]
    no_patients = score(maps, boxes, 256, n_boot=20).summary["bootstrap"]
    assert no_patients["unit"] == "image" and no_patients["n_units"] == 16


def test_scores_are_deterministic_for_a_seed():
    boxes, maps, patients = perfect_case(n_images=8)
    noise = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    maps = {k: v + np.kron(noise, np.ones((32, 32), np.float32)) for k, v in maps.items()}
    a = score(maps, boxes, 256, patients=patients, n_boot=100, seed=1, policy="calibrated")
    b = score(maps, boxes, 256, patients=patients, n_boot=100, seed=1, policy="calibrated")
    assert a.summary == b.summary
    pd.testing.assert_frame_equal(a.per_box, b.per_box)


def test_calibrated_is_patient_disjoint_and_states_tau():
    boxes, maps, patients = perfect_case(n_images=24)
    r = score(maps, boxes, 256, patients=patients, policy="calibrated", n_boot=0, seed=5)
    cal = r.summary["calibration"]
    calib_p = {patients[i] for i in cal["calibration_images"]}
    eval_p = {patients[i] for i in cal["evaluation_images"]}
    assert not calib_p & eval_p
    assert cal["n_calibration_images"] == 12 and cal["n_evaluation_images"] == 12
    assert set(r.per_box["image_id"]) == set(cal["evaluation_images"])
    for lab, c in cal["thresholds"].items():
        assert 0 <= c["tau"] < 1 and c["components"] in ("all", "largest")
        assert (r.per_box.loc[r.per_box["label"] == lab, "tau"] == c["tau"]).all()


def test_calibrated_picks_the_tau_that_works_on_the_calibration_half():
    # a map whose box appears only above 0.8: a low tau gives a huge box, tau>=0.8 gives the exact one
    rows, maps = [], {}
    for i in range(20):
        rows.append(dict(image_id=f"i{i}", label="Mass", x=50, y=60, w=40, h=30))
        m = np.full((256, 256), 0.0, np.float32)
        m[20:200, 20:200] = 0.8
        m[60:90, 50:90] = 1.0
        maps[f"i{i}::Mass"] = m
    r = score(maps, pd.DataFrame(rows), 256, policy="calibrated", n_boot=0)
    assert r.summary["calibration"]["thresholds"]["Mass"]["tau"] >= 0.8
    assert (r.per_box["best_iou"] == 1.0).all()


def test_maxboxacc_is_an_upper_bound_of_fixed_thresholds():
    rng = np.random.default_rng(7)
    boxes, maps, _ = perfect_case(n_images=12)
    maps = {k: v[::4, ::4] + rng.normal(0, 0.4, (64, 64)).astype(np.float32) for k, v in maps.items()}
    mb = score(maps, boxes, 256, policy="maxboxacc", n_boot=0, sweep_size=256).summary["maxboxacc"]
    best_fixed = {}
    for tau in (0.1, 0.3, 0.5, 0.7, 0.9):
        s = score(maps, boxes, 256, policy="threshold", tau=tau, n_boot=0).summary
        for lab in LABELS:
            for d in ("0.3", "0.5", "0.7"):
                assert mb["per_class"][lab][d] >= s["iou_acc"][lab][d]
                best_fixed[lab, d] = max(best_fixed.get((lab, d), 0), s["iou_acc"][lab][d])
    assert 0 <= mb["macro"]["maxboxacc_v2"] <= 1
    assert any(mb["per_class"][lab][d] > 0 for lab, d in best_fixed)


def test_bad_inputs_name_the_key_or_row():
    boxes, maps, _ = perfect_case(n_images=4)
    bad = dict(maps)
    k0 = next(iter(bad))
    bad[k0] = bad[k0].copy()
    bad[k0][3, 3] = np.nan
    with pytest.raises(ValueError, match=k0.replace(".", r"\.") + ".*NaN"):
        score(bad, boxes, 256, n_boot=0)
    out = boxes.copy()
    out.loc[2, "x"] = 250
    with pytest.raises(ValueError, match="boxes row 2.*outside"):
        score(maps, out, 256, n_boot=0)
    unk = boxes.copy()
    unk.loc[1, "label"] = "Fracture"
    with pytest.raises(ValueError, match="boxes row 1.*unknown finding label 'Fracture'"):
        score(maps, unk, 256, n_boot=0)
    nan = boxes.astype({"w": float})
    nan.loc[3, "w"] = np.inf
    with pytest.raises(ValueError, match="boxes row 3.*w="):
        score(maps, nan, 256, n_boot=0)
    with pytest.raises(ValueError, match="unknown policy"):
        score(maps, boxes, 256, policy="best")
    with pytest.raises(ValueError, match="fixes its own thresholds"):
        score(maps, boxes, 256, policy="wang2017", tau=0.3)
    with pytest.raises(ValueError, match="at least 2 patients"):
        score(maps, boxes, 256, policy="calibrated", patients={i: "same" for i in boxes["image_id"]})
    with pytest.raises(ValueError, match="unknown scoring option"):
        score(maps, boxes, 256, taux=0.3)
    with pytest.raises(ValueError, match="no image size for image"):
        score(maps, boxes, {"img000.png": (256, 256)}, n_boot=0)


def test_missing_maps_fail_unless_allowed_then_count_as_misses():
    boxes, maps, _ = perfect_case(n_images=6)
    k = bundle_key(boxes["image_id"][4], boxes["label"][4])
    del maps[k]
    with pytest.raises(ValueError, match=f"no heatmap for 1 .*{k}.*allow_missing"):
        score(maps, boxes, 256, n_boot=0)
    r = score(maps, boxes, 256, n_boot=0, allow_missing=True)
    assert r.summary["n_missing"] == 1 and r.summary["missing_keys"] == [k]
    assert r.summary["iou_acc"]["micro"]["0.1"] == pytest.approx(5 / 6)
    assert bool(r.per_box.set_index("image_id").loc[boxes["image_id"][4], "missing"])


def test_image_sizes_from_bundle_and_non_square(tmp_path):
    from wsl_bench.heatmaps import read_bundle, write_bundle

    boxes = pd.DataFrame([dict(image_id="w", label="Mass", x=300, y=10, w=80, h=40)])
    m = np.zeros((100, 400), np.float32)
    m[10:50, 300:380] = 1
    write_bundle(tmp_path / "b.npz", {"w::Mass": m[::2, ::2]}, {"w": (100, 400)})
    r = score(read_bundle(tmp_path / "b.npz"), boxes, n_boot=0, policy="threshold")
    assert r.per_box["best_iou"].iloc[0] == 1.0


def test_pxap_with_masks():
    boxes, maps, _ = perfect_case(n_images=4)
    masks = {k: v > 0 for k, v in maps.items()}
    s = score(maps, boxes, 256, masks=masks, n_boot=0).summary
    assert s["pxap"]["macro"] == pytest.approx(1.0)
    inverted = {k: 1.0 - v for k, v in maps.items()}
    s2 = score(inverted, boxes, 256, masks=masks, n_boot=0).summary
    assert s2["pxap"]["macro"] < 0.2


def test_scores_ignore_affine_map_changes_and_row_order():
    boxes, maps, patients = perfect_case(n_images=8, seed=2)
    rng = np.random.default_rng(0)
    maps = {k: ndi_blur(v + rng.random(v.shape).astype(np.float32) * 0.5) for k, v in maps.items()}
    a = score(maps, boxes, 256, patients=patients, n_boot=50, seed=1)
    scaled = {k: 3.0 * v - 7.0 for k, v in maps.items()}
    b = score(scaled, boxes.iloc[::-1].reset_index(drop=True), 256, patients=patients, n_boot=50, seed=1)
    key = ["image_id", "label"]
    pa = a.per_box.sort_values(key).reset_index(drop=True)
    pb = b.per_box.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(pa["best_iou"], pb["best_iou"], atol=1e-6)
    assert a.summary["iou_acc"] == b.summary["iou_acc"]


def ndi_blur(m):
    from scipy import ndimage

    return ndimage.gaussian_filter(m, 3).astype(np.float32)


def test_empty_box_table_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        score({}, pd.DataFrame(columns=["image_id", "label", "x", "y", "w", "h"]), 256)


def test_by_size_has_cis_and_labels_absent_from_a_bin_are_null():
    boxes, maps, patients = perfect_case(n_images=16)
    s = score(maps, boxes, 256, patients=patients, n_boot=100).summary
    for b, v in s["by_size"].items():
        if v["n_boxes"]:
            lo, hi = v["ci"]["iou_acc"]["macro"]["0.5"]
            assert lo <= v["iou_acc"]["macro"]["0.5"] <= hi
            for lab in LABELS:
                if not ((boxes["label"] == lab) & (r_bins(boxes) == b)).any():
                    assert v["iou_acc"][lab]["0.5"] is None


def r_bins(boxes):
    from wsl_bench.metrics.aggregate import size_bin

    return size_bin((boxes["w"] * boxes["h"] / 256**2).to_numpy())


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(1, 5), st.integers(0, 1000), st.floats(0.2, 0.8))
def test_calibration_split_is_patient_disjoint_and_near_the_fraction(n_images, per_patient, seed, fraction):
    from wsl_bench.metrics import calibration_split

    ids = [f"i{i}" for i in range(n_images)]
    patients = {i: f"p{k // per_patient}" for k, i in enumerate(ids)}
    calib, evaluation = calibration_split(ids, patients, fraction, seed)
    assert sorted(calib + evaluation) == sorted(ids)
    assert not {patients[i] for i in calib} & {patients[i] for i in evaluation}
    assert fraction * n_images <= len(calib) < fraction * n_images + per_patient
    assert calibration_split(ids, patients, fraction, seed) == (calib, evaluation)


def test_wang2017_matches_an_independent_skimage_reference():
    """Oracle: skimage labelling + regionprops boxes + a plain loop give the same best IoU/IoBB."""
    import torch
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(11)
    rows, maps = [], {}
    for i in range(6):
        w, h = rng.integers(20, 90, 2)
        x, y = rng.integers(0, 256 - w), rng.integers(0, 256 - h)
        rows.append(dict(image_id=f"r{i}", label="Effusion", x=int(x), y=int(y), w=int(w), h=int(h)))
        maps[f"r{i}::Effusion"] = ndi_blur(rng.random((16, 16)).astype(np.float32))
    boxes = pd.DataFrame(rows)
    pb = score(maps, boxes, 256, n_boot=0).per_box
    for r in pb.itertuples():
        m = torch.from_numpy(maps[f"{r.image_id}::Effusion"])[None, None]
        u = torch.nn.functional.interpolate(m, size=(256, 256), mode="bilinear", align_corners=False)[0, 0].numpy()
        u = (u - u.min()) / (u.max() - u.min())
        best_iou = best_iobb = 0.0
        for t in (60 / 255, 180 / 255):
            for reg in regionprops(label(u > t, connectivity=2)):
                r0, c0, r1, c1 = reg.bbox
                iw = max(0, min(c1, r.x + r.w) - max(c0, r.x))
                ih = max(0, min(r1, r.y + r.h) - max(r0, r.y))
                inter, area = iw * ih, (c1 - c0) * (r1 - r0)
                best_iou = max(best_iou, inter / (area + r.w * r.h - inter))
                best_iobb = max(best_iobb, inter / area)
        assert r.best_iou == pytest.approx(best_iou, abs=1e-9)
        assert r.best_iobb == pytest.approx(best_iobb, abs=1e-9)
