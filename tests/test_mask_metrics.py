"""Mask Dice / IoU (known answers, the scorer's columns and keys, active only on request) and, end to end on
mirrors, a SIIM run's mask scores and a VinDr run's per-reader scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from wsl_bench import run as R
from wsl_bench.cli import app
from wsl_bench.data.registry import get_dataset
from wsl_bench.metrics import available_metrics, score
from wsl_bench.metrics.mask_overlap import MASK_TAU, mask_metrics, mask_overlap, mask_scope

runner = CliRunner()
SIZE = 32


def square(y0: int, x0: int, side: int, size: int = SIZE) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


# ---------------------------------------------------------------------------------------------------
# known answers
# ---------------------------------------------------------------------------------------------------


def test_a_map_equal_to_the_mask_scores_one():
    mask = square(4, 4, 10)
    assert mask_overlap(mask.astype(float), mask) == (1.0, 1.0)


def test_a_disjoint_map_scores_zero():
    assert mask_overlap(square(0, 0, 8).astype(float), square(20, 20, 8)) == (0.0, 0.0)


def test_half_overlap_has_the_known_value():
    mask = square(0, 0, 8)  # 64 pixels
    pred = np.zeros((SIZE, SIZE))
    pred[0:8, 4:12] = 1.0  # 64 pixels, 32 of them on the mask
    dice, iou = mask_overlap(pred, mask)
    assert dice == pytest.approx(2 * 32 / 128) and iou == pytest.approx(32 / 96)


def test_threshold_is_strict_and_empty_against_empty_is_undefined():
    mask = square(0, 0, 4)
    at_tau = np.where(mask, MASK_TAU, 0.0)  # exactly tau: not above it
    assert mask_overlap(at_tau, mask) == (0.0, 0.0)
    assert mask_overlap(at_tau, mask, tau=0.4) == (1.0, 1.0)
    assert all(np.isnan(v) for v in mask_overlap(np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE), bool)))


# ---------------------------------------------------------------------------------------------------
# through the scorer
# ---------------------------------------------------------------------------------------------------


def two_maps():
    """Two Pneumothorax maps: one equal to its mask, one disjoint from it; the first has two boxes."""
    boxes = pd.DataFrame({"image_id": ["a", "a", "b"], "label": ["Pneumothorax"] * 3,
                          "x": [4.0, 10.0, 20.0], "y": [4.0, 10.0, 20.0], "w": [4.0, 4.0, 8.0], "h": [4.0, 4.0, 8.0]})
    masks = {"a::Pneumothorax": square(4, 4, 10), "b::Pneumothorax": square(20, 20, 8)}
    maps = {"a::Pneumothorax": square(4, 4, 10).astype(np.float32),
            "b::Pneumothorax": square(0, 0, 8).astype(np.float32)}
    return boxes, maps, masks


def test_scorer_writes_the_columns_and_keys_only_inside_the_scope(tmp_path):
    boxes, maps, masks = two_maps()
    plain = score(maps, boxes, SIZE, masks=masks, n_boot=0, out_dir=tmp_path / "plain")
    assert "mask_dice" not in plain.per_box and "mask_dice" not in plain.summary
    with mask_metrics():
        assert "mask_overlap" in available_metrics()
        r = score(maps, boxes, SIZE, masks=masks, n_boot=0, out_dir=tmp_path / "masked")
    assert "mask_overlap" not in available_metrics()
    assert list(r.per_box.columns) == [*plain.per_box.columns, "mask_dice", "mask_iou"]
    pd.testing.assert_frame_equal(r.per_box.drop(columns=["mask_dice", "mask_iou"]), plain.per_box)
    assert r.per_box["mask_dice"].tolist() == [1.0, 1.0, 0.0]  # per map, repeated on its box rows
    # one value per map: the map with two boxes counts once
    assert r.summary["mask_dice"] == {"Pneumothorax": 0.5, "macro": 0.5, "micro": 0.5}
    assert r.summary["mask_iou"]["macro"] == 0.5
    written = json.loads((tmp_path / "masked" / "summary.json").read_text())
    assert written["mask_dice"]["macro"] == 0.5
    assert {k: v for k, v in r.summary.items() if k not in ("mask_dice", "mask_iou")} == plain.summary


def test_maps_without_a_mask_get_no_value_and_tau_is_used():
    boxes, maps, masks = two_maps()
    masks.pop("b::Pneumothorax")
    maps["a::Pneumothorax"] = np.where(square(4, 4, 10), 0.6, 0.0).astype(np.float32)
    maps["a::Pneumothorax"][0, 0] = 1.0  # normalised: the mask reads 0.6, one corner pixel 1.0
    with mask_metrics(tau=0.7):
        high = score(maps, boxes, SIZE, masks=masks, n_boot=0)
    with mask_scope({"mask_metrics": True, "mask_tau": 0.5}):
        low = score(maps, boxes, SIZE, masks=masks, n_boot=0)
    assert high.per_box["mask_dice"].iloc[0] == pytest.approx(0.0)  # only the corner pixel exceeds 0.7
    assert low.per_box["mask_dice"].iloc[0] == pytest.approx(2 * 100 / 201)
    assert np.isnan(low.per_box["mask_dice"].iloc[2])
    with mask_scope({}):
        assert "mask_dice" not in score(maps, boxes, SIZE, masks=masks, n_boot=0).per_box


def test_bad_tau_and_mismatched_masks_are_clear_errors():
    with pytest.raises(ValueError, match=r"score.mask_tau must be in \[0, 1\), got 1.5"):
        with mask_metrics(tau=1.5):
            pass
    assert "mask_overlap" not in available_metrics()
    boxes, maps, masks = two_maps()
    masks["a::Pneumothorax"] = np.zeros((16, 16), bool)
    with mask_metrics(), pytest.raises(ValueError, match=r"mask.*'a::Pneumothorax'.*16.*32"):
        score(maps, boxes, SIZE, masks=masks, n_boot=0)


def test_only_outlined_masks_switch_the_config_on():
    assert "mask_metrics" not in R.build_config(["random"], preset="tiny")["score"]
    nih = R.build_config(["random"], preset="tiny", test_data="nih", test_root="/data/nih")
    assert "mask_metrics" not in nih["score"]
    siim = R.build_config(["random"], preset="tiny", test_data="siim-pneumothorax", test_root="/data/siim")
    assert siim["score"]["mask_metrics"] is True and siim["score"]["mask_tau"] == MASK_TAU


# ---------------------------------------------------------------------------------------------------
# end to end on mirrors
# ---------------------------------------------------------------------------------------------------


def external_run(out: Path, test_data: str, mirror: Path):
    return runner.invoke(app, ["run", "--methods", "prior-center", "--preset", "tiny", "--test-data", test_data,
                               "--test-root", str(mirror), "--out", str(out), "--set", "score.n_boot=10",
                               "--no-progress"], terminal_width=250)


def test_a_siim_run_scores_mask_dice_and_iou(tmp_path):
    mirror = tmp_path / "siim"
    get_dataset("siim-pneumothorax").export_mirror(mirror, size=64, images=60)
    out = tmp_path / "run"
    result = external_run(out, "siim-pneumothorax", mirror)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["score"]["mask_metrics"] is True
    assert (out / "data" / "masks.npz").is_file() and not (out / "data" / "reader_boxes.csv").exists()
    for m in ("prior-center", "random"):
        per_box = pd.read_csv(out / "scores" / m / "per_box.csv")
        assert {"mask_dice", "mask_iou"} <= set(per_box.columns)
        assert per_box["mask_dice"].between(0, 1).all() and (per_box["mask_iou"] <= per_box["mask_dice"]).all()
        summary = json.loads((out / "scores" / m / "summary.json").read_text())
        assert set(summary["mask_dice"]) == {"Pneumothorax", "macro", "micro"}
        assert summary["mask_iou"]["macro"] is not None and "pxap" in summary
        assert not (out / "scores" / m / "readers").exists()


def test_a_vindr_run_scores_each_reader(tmp_path):
    mirror = tmp_path / "vindr"
    get_dataset("vindr-cxr").export_mirror(mirror, size=64, images=150)
    out = tmp_path / "run"
    result = external_run(out, "vindr-cxr", mirror)
    assert result.exit_code == 0, result.output
    assert "mask_metrics" not in yaml.safe_load((out / "config.yaml").read_text())["score"]
    readers = pd.read_csv(out / "data" / "reader_boxes.csv", dtype={"image_id": str, "reader": str})
    boxes = pd.read_csv(out / "data" / "boxes.csv", dtype={"image_id": str})
    assert list(readers.columns) == ["image_id", "label", "x", "y", "w", "h", "reader"]
    assert set(readers["image_id"]) <= set(boxes["image_id"])  # only the films that have maps
    names = sorted(readers["reader"].unique())
    assert len(names) >= 2
    consensus = json.loads((out / "scores" / "prior-center" / "summary.json").read_text())
    for r in names:
        folder = out / "scores" / "prior-center" / "readers" / r
        s = json.loads((folder / "summary.json").read_text())
        assert s["policy"] == consensus["policy"] and s["policy_options"] == consensus["policy_options"]
        per_box = pd.read_csv(folder / "per_box.csv", dtype={"image_id": str})
        own = readers[readers["reader"] == r].drop_duplicates(["image_id", "label", "x", "y", "w", "h"])
        assert len(per_box) == len(own) == s["n_boxes"]
    report = (out / "report" / "report.md").read_text()
    section = report.split("## Per reader", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| Method |"))
    assert header.startswith("| Method | T(IoU) | Consensus |") and all(f" {r} |" in header for r in names)
    assert "Reader range" in section and "| prior-center | 0.3 |" in section
    again = external_run(out, "vindr-cxr", mirror)  # every stage skipped: the reader scores were kept
    assert again.exit_code == 0 and "score:" not in again.output
    assert (out / "scores" / "prior-center" / "readers" / names[0] / "summary.json").is_file()
