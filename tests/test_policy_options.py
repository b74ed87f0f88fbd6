"""A plug-in policy's own options in a run config: `--set score.<option>=...` is checked against the chosen
policy's `options` (and its `check`), recorded in config.yaml, and reaches the scorer through the score stage.

The policy is the contributor guide's example (`zhou2016`, tests/test_contrib_policy.py), registered for
each test and removed afterwards."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_contrib_policy import SIZE, two_blob_case, zhou2016  # noqa: F401 - zhou2016 is a fixture

from wsl_bench.config import build_config, parse_overrides
from wsl_bench.heatmaps import write_bundle
from wsl_bench.labels import FINDINGS
from wsl_bench.metrics.options import score_problems
from wsl_bench.settings import SettingsError


def test_the_chosen_policys_options_are_known_score_settings(zhou2016):
    assert score_problems({"policy": "zhou2016", "zhou_fraction": 0.3}) == []
    assert score_problems({"policy": "zhou2016", "zhou_fraction": 0.3, "n_boot": 10}, "--", run=False) == []
    # another policy does not read it: an unknown setting, as before
    (problem,) = score_problems({"policy": "wang2017", "zhou_fraction": 0.3})
    assert problem.startswith("unknown score setting(s) ['zhou_fraction']; known: ")
    assert "zhou_fraction" not in problem.split("known: ")[1]
    # the policy's own check runs on the value
    assert score_problems({"policy": "zhou2016", "zhou_fraction": 1.5}) == [
        "score settings: zhou_fraction must be in [0, 1), got 1.5"]


def test_a_run_config_takes_the_option(zhou2016):
    overrides = parse_overrides(["score.policy=zhou2016", "score.zhou_fraction=0.3"])
    cfg = build_config(["gradcam"], preset="tiny", overrides=overrides)
    assert cfg["score"]["policy"] == "zhou2016" and cfg["score"]["zhou_fraction"] == 0.3
    with pytest.raises(SettingsError, match=r"zhou_fraction must be in \[0, 1\), got 1.5"):
        build_config(["gradcam"], preset="tiny", overrides=parse_overrides(["score.policy=zhou2016", "score.zhou_fraction=1.5"]))
    with pytest.raises(SettingsError, match=r"unknown score setting\(s\) \['zhou_fraction'\]"):
        build_config(["gradcam"], preset="tiny", overrides=parse_overrides(["score.zhou_fraction=0.3"]))  # tiny: wang2017


def test_the_option_is_refused_once_the_policy_is_gone(zhou2016):
    from wsl_bench.localize import unregister_policy

    unregister_policy("zhou2016")
    problems = score_problems({"policy": "zhou2016", "zhou_fraction": 0.3})
    assert any(p.startswith("unknown policy 'zhou2016' (score.policy); choose one of wang2017") for p in problems)
    assert any(p.startswith("unknown score setting(s) ['zhou_fraction']") for p in problems)


def fake_run_folder(root, maps: dict, boxes: pd.DataFrame, score_cfg: dict):
    """The files the score stage reads (data/images.csv, data/boxes.csv, the bundle, its probabilities)."""
    ids = sorted(set(boxes["image_id"]))
    (root / "data").mkdir(parents=True)
    images = pd.DataFrame({"image_id": ids, "patient_id": ids, "orig_h": SIZE, "orig_w": SIZE})
    for f in FINDINGS:
        images[f] = 1.0 if f == "Mass" else 0.0
    images.to_csv(root / "data" / "images.csv", index=False)
    boxes.to_csv(root / "data" / "boxes.csv", index=False)
    write_bundle(root / "heatmaps" / "toy.npz", maps, {i: (SIZE, SIZE) for i in ids})
    images[["image_id", *FINDINGS]].to_csv(root / "heatmaps" / "toy.probs.csv", index=False)
    done = {}
    run = SimpleNamespace(dir=root, config={"seed": 0, "score": score_cfg, "methods": {}, "methods_order": []},
                          manifest={}, mark_done=lambda name, key, files, **extra: done.update({name: key}))
    return run, done


def test_the_score_stage_hands_the_option_to_the_scorer(zhou2016, tmp_path):
    from wsl_bench.stages.score import score_stage

    boxes, maps = two_blob_case()
    score_cfg = {"policy": "zhou2016", "n_boot": 0, "sanity": False, "zhou_fraction": 0.3}
    run, done = fake_run_folder(tmp_path / "run", maps, boxes, score_cfg)
    score_stage(run, "toy", "k1")
    summary = json.loads((tmp_path / "run" / "scores" / "toy" / "summary.json").read_text())
    assert done == {"score/toy": "k1"}
    assert summary["policy"] == "zhou2016"
    assert summary["policy_options"]["zhou_fraction"] == 0.3
    assert summary["policy_detail"] == {"name": "zhou2016", "thresholds": [0.3], "components": "largest"}
    per_box = pd.read_csv(tmp_path / "run" / "scores" / "toy" / "per_box.csv")
    assert np.allclose(per_box["best_iou"], 1.0) and (per_box["n_candidates"] == 1).all()
