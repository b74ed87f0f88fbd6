"""docs/contributing.md, "Adding a method", runs as written: its example block is executed as a module (registered
for the test, unregistered after it), run through a tiny benchmark (what `wsl-bench run --preset tiny --methods
mean-cam` does), and held to the contract tests every installed method meets."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "contributing.md"
NAME = "mean-cam"


def guide_block(marker: str, lang: str = "python") -> str:
    """The first ```lang block after `marker` in the guide."""
    text = GUIDE.read_text(encoding="utf-8")
    assert marker in text, f"{GUIDE} lost its {marker!r} marker"
    found = re.search(rf"```{lang}\n(.*?)```", text.split(marker, 1)[1], flags=re.S)
    assert found, f"no {lang} block after {marker!r} in {GUIDE}"
    return found.group(1)


@pytest.fixture
def example(monkeypatch):
    """The guide's method module, registered for the test and unregistered after it."""
    from wsl_bench import methods

    module = types.ModuleType("mean_cam")
    monkeypatch.setitem(sys.modules, "mean_cam", module)
    exec(compile(guide_block("<!-- example: method"), str(GUIDE), "exec"), module.__dict__)
    assert NAME in methods.available_methods()
    yield module
    methods.unregister_method(NAME)


def test_the_example_is_benchmarked_by_a_tiny_run(example, tmp_path):
    from test_checkpoints import checkpoint_pairs
    from wsl_bench.run import build_config, execute

    run = tmp_path / "run"
    execute(build_config([NAME], preset="tiny", seed=0, overrides={"report": {"full": False}}), run, log=lambda s: None)
    summary = json.loads((run / "scores" / NAME / "summary.json").read_text())
    per_box = pd.read_csv(run / "scores" / NAME / "per_box.csv")
    assert summary["n_boxes"] == len(per_box) > 0
    assert per_box["best_iou"].between(0, 1).all()
    assert summary["iou_acc"] and all(0 <= v <= 1 for acc in summary["iou_acc"].values() for v in acc.values())
    assert NAME in (run / "report" / "report.md").read_text()
    assert checkpoint_pairs(run / "checkpoints" / NAME) == ["model"]  # the one checkpoint format


def test_the_example_saves_loads_and_refuses_a_missing_checkpoint(example, tmp_path):
    from wsl_bench.methods import create_method, resolve_config

    torch.manual_seed(0)
    method = create_method(NAME, resolve_config(NAME, "paper"))
    method.save(tmp_path / "ck")
    again = create_method(NAME)  # quick's width: the checkpoint's shape wins
    again.load(tmp_path / "ck")
    x = torch.rand(3, 1, 32, 32)
    assert again.config["width"] == 32 and torch.equal(again.explain(x, [0, 5]), method.explain(x, [0, 5]))
    assert again.predict(x).shape == (3, 14) and again.explain(x, [2]).shape == (3, 1, 16, 16)
    with pytest.raises(FileNotFoundError, match="fit mean-cam first"):
        again.load(tmp_path / "nothing")


def test_the_example_meets_the_contract_tests_of_every_method(example):
    from test_methods_presets import (
        test_every_method_has_quick_standard_and_paper_presets_that_validate as presets_validate,
        test_standard_trains_with_an_epoch_cap_and_early_stopping as standard_stops_early,
    )
    from wsl_bench.run import build_config

    presets_validate(NAME)
    standard_stops_early(NAME)
    config = build_config([NAME], preset="tiny", ablate=["conv2"])
    assert config["methods"][f"{NAME}-no-conv2"]["config"]["depth"] == 1


def test_the_entry_point_snippet_is_the_plugin_packages():
    from wsl_bench.methods import ENTRY_POINT_GROUP

    snippet = [line for line in guide_block("## Adding a method", "toml").strip().splitlines() if line]
    assert snippet[0] == f'[project.entry-points."{ENTRY_POINT_GROUP}"]'
    plugin = (ROOT / "tests" / "plugin_pkg" / "pyproject.toml").read_text().splitlines()
    assert all(line in plugin for line in snippet)
