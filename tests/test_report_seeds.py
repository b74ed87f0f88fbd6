"""The section "Rankings across seeds": known answers for the spread, the rankings and Kendall's tau-b,
which runs qualify, and the section in a written report (Markdown, HTML, CSV and LaTeX)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_report_helpers import make_fake_run, toy_sanity

from wsl_bench.report import load_runs, write_report
from wsl_bench.report import seeds as SD
from wsl_bench.report.runs import PER_BOX_COLUMNS

BASE_CONFIG = {
    "preset": "quick",
    "data": {"name": "synth", "image_size": 128, "n_test": 600},
    "fit": {"max_epochs": None, "batch_size": None, "num_workers": 0},
    "explain": {"batch_size": 32},
    "score": {"policy": "wang2017", "n_boot": 1000, "sanity": True},
    "hardware": {"devices": 1},
    "progress": False,
}
ROLES = {"prior-lung": "guess", "random": "guess", "oracle-seg": "ceiling"}


def toy_summary(acc: float, gain: float | None = None, right_class: float | None = None, auroc: float | None = None,
                role: str = "method") -> dict:
    """A summary.json with macro IoU accuracy `acc` at T(IoU) 0.3 (acc + 0.2 at 0.1, acc - 0.1 at 0.5), the
    size bins at 0.3 (small acc - 0.05, medium acc, large acc + 0.05), and the sanity numbers given."""
    sanity = {"role": role}
    if gain is not None:
        sanity["gain_over_guess"] = {"rows": [
            {"scope": "macro", "label": "macro", "threshold": "0.3", "diff": gain, "ci": [gain - 0.1, gain + 0.1]},
            {"scope": "macro", "label": "macro", "threshold": "0.1", "diff": 9.0, "ci": [8.0, 10.0]}]}  # never read
    if right_class is not None:
        sanity["class_specificity"] = {"right_class_rate": {"chance": 0.125, "macro": {"rate": right_class, "ci": [0, 1]}}}
    bins = {"small": ([0.0, 0.025], -0.05), "medium": ([0.025, 0.078], 0.0), "large": ([0.078, None], 0.05)}
    return {
        "policy": "wang2017",
        "iou_acc": {"macro": {"0.1": acc + 0.2, "0.3": acc, "0.5": acc - 0.1}},
        "by_size": {b: {"area_fraction": f, "n_boxes": 3, "iou_acc": {"macro": {"0.3": acc + d}}} for b, (f, d) in bins.items()},
        "auroc": {"mean": auroc, "per_class": {}, "ci": {}} if auroc is not None else {},
        "sanity": sanity,
    }


def make_seed_run(root: Path, seed: int, summaries: dict[str, dict], config: dict | None = None,
                  git: str = "abc123", with_config: bool = True) -> Path:
    """A run folder with hand-written summaries (no scoring): what the seed section reads, and the
    minimal tables `load_runs` needs."""
    root.mkdir(parents=True)
    (root / "data").mkdir()
    pd.DataFrame({"image_id": ["i0"], "patient_id": ["p0"]}).to_csv(root / "data" / "images.csv", index=False)
    box = {"image_id": "i0", "label": "Mass", "x": 1.0 + seed, "y": 1.0, "w": 5.0, "h": 5.0}  # a seed draws its cohort
    pd.DataFrame([box]).to_csv(root / "data" / "boxes.csv", index=False)
    for m, s in summaries.items():
        d = root / "scores" / m
        d.mkdir(parents=True)
        row = {**box, "size_bin": "small", "best_iou": 0.5, "best_iobb": 0.5, "pointing_hit": 1}
        pd.DataFrame([row], columns=list(PER_BOX_COLUMNS)).to_csv(d / "per_box.csv", index=False)
        (d / "summary.json").write_text(json.dumps(s))
    (root / "manifest.json").write_text(json.dumps({"seed": seed, "methods": list(summaries), "git_revision": git}))
    if with_config:
        cfg = json.loads(json.dumps(config or BASE_CONFIG))
        cfg["seed"] = seed
        cfg["methods"] = {m: {"registry": m, "method_preset": "quick", "config": {"lr": 0.001}} for m in summaries}
        cfg["methods_order"] = list(summaries)
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def runs_with(tmp_path: Path, per_seed: dict[int, dict[str, float]], **kwargs) -> list[Path]:
    """One run per seed; each method's accuracy at T(IoU) 0.3 as given (references by name)."""
    return [make_seed_run(tmp_path / f"seed{s}", s, {m: toy_summary(a, role=ROLES.get(m, "method")) for m, a in accs.items()},
                          **kwargs) for s, accs in per_seed.items()]


def section(runs: list[Path]) -> SD.SeedSection:
    sec = SD.build_section(load_runs(runs))
    assert sec is not None and sec.reason is None, sec and sec.reason
    return sec


def table(sec: SD.SeedSection, name: str):
    return next(t for t in sec.tables if t.name == name)


# -- known answers -----------------------------------------------------------------------------


def test_spread_is_mean_sample_sd_min_max_and_n():
    s = SD.spread([0.2, 0.4, math.nan, 0.6])
    assert s == pytest.approx({"n_seeds": 3, "mean": 0.4, "sd": 0.2, "min": 0.2, "max": 0.6})
    one = SD.spread([0.3])
    assert one["n_seeds"] == 1 and one["mean"] == 0.3 and math.isnan(one["sd"])
    assert SD.spread([])["n_seeds"] == 0


def test_kendall_tau_b_known_answers():
    assert SD.kendall([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx((1.0, 2 / 24))  # exact: 2 of 4! orders
    assert SD.kendall([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx((-1.0, 2 / 24))
    # one tie in x: 5 concordant pairs, none discordant, tau-b = 5 / sqrt((6 - 1) * 6)
    assert SD.kendall([1, 2, 2, 3], [1, 2, 3, 4])[0] == pytest.approx(5 / math.sqrt(30))
    assert all(math.isnan(v) for v in SD.kendall([0.5], [0.5]))


def test_identical_ranking_gives_tau_one_and_holds(tmp_path):
    runs = runs_with(tmp_path, {
        0: {"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3, "prior-lung": 0.45, "oracle-seg": 0.9},
        1: {"a": 0.7, "b": 0.55, "c": 0.35, "d": 0.2, "prior-lung": 0.1, "oracle-seg": 0.95},
        2: {"a": 0.65, "b": 0.6, "c": 0.5, "d": 0.45, "prior-lung": 0.8, "oracle-seg": 0.85},
    })
    sec = section(runs)
    kt = table(sec, "seeds_kendall").long
    assert list(zip(kt.seed_a, kt.seed_b)) == [(0, 1), (0, 2), (1, 2)]
    assert kt["tau_b"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert kt["p_value"].tolist() == pytest.approx([1 / 12] * 3)
    assert kt["n_methods"].tolist() == [4, 4, 4]
    assert kt["methods"].iloc[0] == "a;b;c;d"  # the references are not ranked
    # with the references (6 per seed) the guess moves around: seeds 0 vs 1 swap prior-lung with c and d
    assert kt["n_with_references"].tolist() == [6, 6, 6]
    assert kt["tau_b_with_references"].iloc[0] < 1.0
    assert sec.holds is True and "holds across seeds" in sec.verdict and "lowest +1.00" in sec.verdict
    rank = table(sec, "seeds_ranking")
    assert rank.display.loc["a", "Seed 1"] == "1 (0.70)" and rank.display.loc["d", "Mean rank"] == "4.0"
    assert rank.display.loc["prior-lung (reference)", "Seed 0"] == "(0.45)"
    long = rank.long.set_index(["method", "seed"])
    assert math.isnan(long.loc[("prior-lung", 2), "rank"]) and long.loc[("prior-lung", 2), "rank_with_references"] == 2
    assert list(rank.display.index) == ["a", "b", "c", "d", "prior-lung (reference)", "oracle-seg (reference)"]


def test_reversed_ranking_gives_tau_minus_one_and_does_not_hold(tmp_path):
    runs = runs_with(tmp_path, {3: {"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3}, 7: {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}})
    sec = section(runs)
    kt = table(sec, "seeds_kendall")
    assert kt.long["tau_b"].tolist() == pytest.approx([-1.0]) and kt.long["p_value"].iloc[0] == pytest.approx(1 / 12)
    assert kt.display.loc["3 vs 7", "τ-b"] == "-1.00" and kt.display.loc["3 vs 7", "τ-b ≥ 0.7"] == "no"
    assert sec.holds is False and "does not hold" in sec.verdict and "3 vs 7 (-1.00)" in sec.verdict
    assert table(sec, "seeds_ranking").display.loc["d", "Seed 7"] == "1 (0.40)"


def test_partially_overlapping_method_sets(tmp_path):
    runs = runs_with(tmp_path, {
        0: {"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.3, "random": 0.05},
        1: {"b": 0.45, "c": 0.5, "d": 0.2, "e": 0.9, "random": 0.06},
    })
    sec = section(runs)
    kt = table(sec, "seeds_kendall").long.iloc[0]
    assert kt["methods"] == "b;c;d" and kt["n_methods"] == 3
    assert kt["tau_b"] == pytest.approx(1 / 3)  # b, c swap: 2 concordant, 1 discordant of 3 pairs
    assert sec.holds is False
    summary = table(sec, "seeds_summary")
    assert summary.display.loc["a", "Seeds"] == "1" and summary.display.loc["a", "Acc. T(IoU)=0.3"] == "0.60 (n=1)"
    assert summary.display.loc["b", "Seeds"] == "2"
    long = summary.long.set_index(["method", "quantity", "threshold"])
    b = long.loc[("b", "iou_acc", "0.3")]
    assert b["mean"] == pytest.approx(0.475) and b["sd"] == pytest.approx(0.025 * math.sqrt(2))
    assert (b["seeds"], b["values"]) == ("0;1", "0.5;0.45")
    assert math.isnan(long.loc[("e", "iou_acc", "0.3"), "sd"])
    rank = table(sec, "seeds_ranking").display
    assert rank.loc["a", "Seed 1"] == "–" and rank.loc["e", "Seed 1"] == "1 (0.90)" and rank.loc["e", "Seed 0"] == "–"
    assert rank.loc["c", "Mean rank"] == "2.5"  # 3rd of 4 in seed 0, 2nd of 4 in seed 1


def test_too_few_shared_methods_cannot_be_told(tmp_path):
    runs = runs_with(tmp_path, {0: {"a": 0.6, "b": 0.5, "c": 0.1}, 1: {"a": 0.7, "b": 0.4, "d": 0.2}})
    sec = section(runs)
    assert sec.holds is None and "cannot be told" in sec.verdict and "0 vs 1" in sec.verdict
    assert table(sec, "seeds_kendall").display.iloc[0]["τ-b ≥ 0.7"] == "cannot tell"


def test_mean_and_sd_of_every_quantity(tmp_path):
    """Three seeds, accuracy 0.2 / 0.4 / 0.6 at T(IoU) 0.3: every quantity has the known mean and SD."""
    runs = []
    for s, acc in enumerate((0.2, 0.4, 0.6)):
        summaries = {"a": toy_summary(acc, gain=acc - 0.3, right_class=acc / 2, auroc=0.5 + acc / 4),
                     "b": toy_summary(0.1), "prior-lung": toy_summary(0.3, role="guess")}
        runs.append(make_seed_run(tmp_path / f"s{s}", s, summaries))
    sec = section(runs)
    long = table(sec, "seeds_summary").long.set_index(["method", "quantity", "threshold"])
    expected = {("iou_acc", "0.1"): 0.6, ("iou_acc", "0.3"): 0.4, ("iou_acc", "0.5"): 0.3,
                ("gain_over_guess", "0.3"): 0.1, ("right_class_rate", ""): 0.2, ("auroc_mean", ""): 0.6}
    sds = {("right_class_rate", ""): 0.1, ("auroc_mean", ""): 0.05}
    for (q, t), mean in expected.items():
        row = long.loc[("a", q, t)]
        assert row["mean"] == pytest.approx(mean), (q, t)
        assert row["sd"] == pytest.approx(sds.get((q, t), 0.2)), (q, t)
        assert row["n_seeds"] == 3
    assert long.loc[("a", "iou_acc", "0.3"), ["min", "max"]].tolist() == pytest.approx([0.2, 0.6])
    # b has no sanity block and no AUROC: those quantities are missing, never zero
    assert long.loc[("b", "gain_over_guess", "0.3"), "n_seeds"] == 0 and math.isnan(long.loc[("b", "auroc_mean", ""), "mean"])
    disp = table(sec, "seeds_summary").display
    assert disp.loc["a", "Acc. T(IoU)=0.3"] == "0.40 ± 0.20 (0.20, 0.60)"
    assert disp.loc["a", "Gain over best guess (0.3)"] == "+0.10 ± 0.20 (-0.10, +0.30)"
    assert disp.loc["b", "Mean AUROC"] == "–"
    assert disp.loc["prior-lung (reference)", "Seeds"] == "3"
    assert bool(table(sec, "seeds_summary").bold.loc["a", "Acc. T(IoU)=0.3"])
    sizes = table(sec, "seeds_size_bins")
    assert list(sizes.display.columns) == ["small boxes", "medium boxes", "large boxes"]
    sl = sizes.long.set_index(["method", "size_bin"])
    assert sl.loc[("a", "small"), "mean"] == pytest.approx(0.35) and sl.loc[("a", "large"), "sd"] == pytest.approx(0.2)
    assert sizes.display.loc["a", "large boxes"] == "0.45 ± 0.20 (0.25, 0.65)"
    assert sec.references == {"a": False, "b": False, "prior-lung (reference)": True}


# -- which runs qualify ------------------------------------------------------------------------


def _reason(runs: list[Path]) -> str | None:
    return SD.compare_runs(load_runs(runs))[1]


def test_runs_that_differ_in_more_than_the_seed_get_no_section(tmp_path):
    other = json.loads(json.dumps(BASE_CONFIG))
    other["data"]["n_test"] = 300
    other["score"]["policy"] = "calibrated"
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5), "y": toy_summary(0.4)})
    b = make_seed_run(tmp_path / "b", 1, {"x": toy_summary(0.5), "y": toy_summary(0.4)}, config=other)
    reason = _reason([a, b])
    assert "differs from" in reason and "data.n_test (600 vs 300)" in reason and 'score.policy ("wang2017" vs "calibrated")' in reason
    assert SD.build_section(load_runs([a, b])).tables == []


def test_runs_scored_on_another_test_dataset_get_no_section(tmp_path):
    other = json.loads(json.dumps(BASE_CONFIG))
    other["test_data"] = {"name": "rsna"}  # external validation: trained on one dataset, scored on another
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5), "y": toy_summary(0.4)})
    b = make_seed_run(tmp_path / "b", 1, {"x": toy_summary(0.5), "y": toy_summary(0.4)}, config=other)
    reason = _reason([a, b])
    assert "differs from" in reason and "test_data" in reason


def test_a_shared_method_with_other_settings_disqualifies(tmp_path):
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5), "y": toy_summary(0.4)})
    b = make_seed_run(tmp_path / "b", 1, {"x": toy_summary(0.5), "y": toy_summary(0.4)})
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["methods"]["y"]["config"]["lr"] = 0.01
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert "methods.y.config.lr (0.001 vs 0.01)" in _reason([a, b])


def test_seed_method_set_hardware_and_data_location_may_differ(tmp_path):
    other = json.loads(json.dumps(BASE_CONFIG))
    other["hardware"] = {"devices": 2}
    other["progress"] = True
    other["data"]["root"] = "/elsewhere"
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5), "y": toy_summary(0.4)})
    b = make_seed_run(tmp_path / "b", 1, {"x": toy_summary(0.5), "z": toy_summary(0.4)}, config=other, git="def456")
    seeds, reason = SD.compare_runs(load_runs([a, b]))
    assert reason is None and sorted(seeds.values()) == [0, 1]
    sec = SD.build_section(load_runs([a, b]))
    assert any("different git revisions" in n for n in sec.notes)


@pytest.mark.parametrize("case, words", [
    ("same seed", "both have seed 0"),
    ("no config", "has no config.yaml"),
    ("no seed", "records no seed"),
    ("disjoint", "no method was scored in more than one"),
])
def test_other_reasons_to_leave_the_section_out(tmp_path, case, words):
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5)})
    b = make_seed_run(tmp_path / "b", 0 if case == "same seed" else 1, {"y" if case == "disjoint" else "x": toy_summary(0.4)},
                      with_config=case != "no config")
    if case == "no seed":
        (b / "manifest.json").write_text("{}")
        cfg = yaml.safe_load((b / "config.yaml").read_text())
        cfg.pop("seed")
        (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert words in _reason([a, b])


def test_a_single_run_has_no_section_and_nothing_to_explain(tmp_path):
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5)})
    assert SD.build_section(load_runs([a])) is None


def test_compared_sections_are_the_hashed_ones_but_the_seed():
    from wsl_bench.config import HASHED_SECTIONS, OPTIONAL_HASHED_SECTIONS

    assert set(SD.COMPARED_SECTIONS) | {"seed", "methods"} == set(HASHED_SECTIONS) | set(OPTIONAL_HASHED_SECTIONS)


# -- in a written report -----------------------------------------------------------------------

SEED_METHODS = {"good": 0.0, "medium": 0.5, "afloc": 0.8, "far": 1.5, "random": None, "prior-center": 1.0}


def _seed_fake_run(root: Path, seed: int, methods: dict) -> Path:
    run = make_fake_run(root, n_images=8, seed=seed, methods=methods,
                        sanity={m: toy_sanity(role="guess" if m in ("random", "prior-center") else "method") for m in methods})
    cfg = {**BASE_CONFIG, "seed": seed, "methods_order": list(methods),
           "methods": {m: {"registry": m, "method_preset": "quick", "config": {}} for m in methods}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory):
    """Two scored fake runs, seeds 0 and 1 (`far` only in seed 0), and their report. The figures and the
    gallery (tested in test_report.py, and most of a report's time) are left out."""
    root = tmp_path_factory.mktemp("seeds")
    a = _seed_fake_run(root / "s0", 0, SEED_METHODS)
    b = _seed_fake_run(root / "s1", 1, {k: v for k, v in SEED_METHODS.items() if k != "far"})
    (a / "data" / "gallery.npz").unlink()  # the gallery comes from the first run: none
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("wsl_bench.report.writer.build_figures", lambda *args, **kwargs: [])
        md = write_report([a, b], root / "out", n_boot=50)
    return a, b, md.parent


def test_report_has_the_seed_section_with_csv_and_tex(seed_report):
    a, b, out = seed_report
    md = (out / "report.md").read_text()
    assert "## Rankings across seeds" in md
    assert md.index("## Does each method localize") < md.index("## Rankings across seeds") < md.index("## Macro IoU accuracy")
    section_md = md.split("## Rankings across seeds")[1].split("\n## ")[0]
    assert "| prior-center (reference) |" in section_md and "τ-b ≥ 0.7" in section_md
    assert "The ranking" in section_md or "cannot be told" in section_md
    for name in ("seeds_summary", "seeds_size_bins", "seeds_ranking", "seeds_kendall"):
        assert f"CSV: `tables/{name}.csv`, LaTeX: `tables/{name}.tex`" in section_md
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "±" not in tex and "τ" not in tex and "≥" not in tex
    html = (out / "index.html").read_text()
    assert 'id="seeds"' in html and 'href="#seeds"' in html and 'data-table="seeds_kendall"' in html
    # the CSV reads the summaries back: accuracy at 0.3 of `good` in each seed
    long = pd.read_csv(out / "tables" / "seeds_summary.csv", dtype={"threshold": str})
    row = long[(long.method == "good") & (long.quantity == "iou_acc") & (long.threshold == "0.3")].iloc[0]
    accs = [json.loads((r / "scores" / "good" / "summary.json").read_text())["iou_acc"]["macro"]["0.3"] for r in (a, b)]
    assert row["mean"] == pytest.approx(sum(accs) / 2) and row["n_seeds"] == 2
    assert row["sd"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    kt = pd.read_csv(out / "tables" / "seeds_kendall.csv")
    assert kt["n_methods"].iloc[0] == 3  # good, medium, afloc (far only in seed 0; the guesses not ranked)


def test_zero_shot_auroc_per_box_finding_in_the_report(seed_report):
    a, _, out = seed_report
    md = (out / "report.md").read_text()
    part = md.split("## Classification AUROC per box finding, with 95 % CIs")[1].split("\n## ")[0]
    assert "s0/afloc, s1/afloc: zero-shot" in part


def test_runs_of_other_settings_are_reported_without_the_section_and_say_why(tmp_path, monkeypatch):
    a = make_seed_run(tmp_path / "a", 0, {"x": toy_summary(0.5), "y": toy_summary(0.4)})
    b = make_seed_run(tmp_path / "b", 1, {"x": toy_summary(0.5), "y": toy_summary(0.4)},
                      config={**BASE_CONFIG, "preset": "paper"})
    sec = SD.build_section(load_runs([a, b]))
    assert sec.tables == [] and 'preset ("quick" vs "paper")' in sec.reason
    monkeypatch.setattr("wsl_bench.report.writer.build_figures", lambda *args, **kwargs: [])
    out = write_report([a, b], tmp_path / "out", n_boot=10).parent
    md, html = (out / "report.md").read_text(), (out / "index.html").read_text()
    why = f'No section "Rankings across seeds": `{b}` differs from `{a}` in more than the seed and the method set'
    assert f"> {why}: preset (\"quick\" vs \"paper\")." in md
    assert "## Rankings across seeds" not in md and 'id="seeds"' not in html and "Rankings across seeds" in html
    assert not list((out / "tables").glob("seeds_*"))


def test_seed_section_renders_cleanly_in_chromium(seed_report, tmp_path):
    from wsl_bench.report.browser import check_page, find_chromium

    if find_chromium() is None and not os.environ.get("WSL_BENCH_REQUIRE_CHROMIUM"):
        pytest.skip("Chromium missing (apt-get update && apt-get install -y chromium)")
    check = check_page(seed_report[2] / "index.html", screenshot=tmp_path / "shot.png")
    assert check.console_errors == [] and check.sorted_ok


# -- swapped pairs: does each seed tell the two methods apart? ----------------------------------


def _hits_run(root: Path, seed: int, hits: dict[str, list[int]]) -> Path:
    """A run whose methods hit (IoU > 0.3) the given boxes, one box per patient; summaries agree with the hits."""
    n = len(next(iter(hits.values())))
    boxes = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "label": ["Mass"] * n, "x": 1.0 + seed, "y": 1.0,
                          "w": 5.0, "h": 5.0, "patient_id": [f"p{k}" for k in range(n)]})
    run = make_seed_run(root, seed, {m: toy_summary(sum(h) / n) for m, h in hits.items()})
    for m, h in hits.items():
        per_box = boxes.assign(size_bin="small", best_iou=[0.5 if x else 0.1 for x in h], best_iobb=0.5, pointing_hit=1,
                               **{"iou_hit_0.3": [bool(x) for x in h]})
        per_box.to_csv(run / "scores" / m / "per_box.csv", index=False)
    return run


def test_swapped_pairs_known_answers():
    a, b = Path("a"), Path("b")
    roles = {"x": "method", "y": "method", "z": "method", "prior-lung": "guess"}
    accs = {a: {"x": 0.5, "y": 0.4, "z": 0.3, "prior-lung": 0.9}, b: {"x": 0.4, "y": 0.5, "z": 0.3, "prior-lung": 0.1}}
    assert SD.swapped_pairs(accs, roles, [a, b]) == [("x", "y")]  # references never; z keeps its place
    accs[b]["z"] = 0.4  # a tie with x is not a reversal
    assert SD.swapped_pairs(accs, roles, [a, b]) == [("x", "y")]
    accs[b] = {"x": 0.5, "y": 0.4}
    assert SD.swapped_pairs(accs, roles, [a, b]) == []


def test_a_pair_each_seed_separates_the_other_way_is_a_significant_reversal(tmp_path):
    n = 60
    better, worse = [1] * 50 + [0] * 10, [0] * 50 + [1] * 10
    runs = [_hits_run(tmp_path / "s0", 0, {"x": better, "y": worse}), _hits_run(tmp_path / "s1", 1, {"x": worse, "y": better})]
    sec = SD.build_section(load_runs(runs), n_boot=200)
    sw = table(sec, "seeds_swaps")
    assert list(sw.display.index) == ["x − y"] and sw.display.loc["x − y", "Swap"] == "significant reversal"
    long = sw.long.set_index("seed")
    assert long.loc[0, "diff"] == pytest.approx(40 / n) and long.loc[1, "diff"] == pytest.approx(-40 / n)
    assert bool(long.loc[0, "significant"]) and bool(long.loc[1, "significant"])
    assert "1 significant reversal (x − y)" in sec.verdict and sec.holds is False


def test_a_swap_no_seed_separates_is_within_noise(tmp_path):
    base = [1, 0] * 30
    flipped = base[:-2] + [0, 1]  # the same hits but for the last two boxes: one more hit, one fewer
    one_more = base[:-1] + [1]
    runs = [_hits_run(tmp_path / "s0", 0, {"x": one_more, "y": base, "z": [0] * 60}),
            _hits_run(tmp_path / "s1", 1, {"x": base, "y": one_more, "z": [0] * 60}),
            _hits_run(tmp_path / "s2", 2, {"x": flipped, "y": base, "z": [0] * 60})]
    sec = SD.build_section(load_runs(runs), n_boot=200)
    sw = table(sec, "seeds_swaps")
    assert list(sw.display.index) == ["x − y"] and sw.display.loc["x − y", "Swap"] == "within noise"
    assert sw.display.loc["x − y", "Seed 2"].startswith("+0.000")
    assert not sw.long["significant"].any() and (sw.long["p_value"] > 0.5).all()
    assert "Swapped pair (1): 1 within noise." in sec.verdict and "every p ≥ 0.05" in sec.verdict


def test_no_swap_no_table_and_untestable_pairs_say_so(tmp_path):
    same = [_hits_run(tmp_path / f"a{s}", s, {"x": [1] * 8 + [0] * 2, "y": [1] * 2 + [0] * 8}) for s in (0, 1)]
    sec = SD.build_section(load_runs(same), n_boot=50)
    assert "seeds_swaps" not in [t.name for t in sec.tables] and "Swapped" not in sec.verdict
    # hand-written per-box tables without hit columns (make_seed_run): the swap is listed, not tested
    runs = runs_with(tmp_path / "b", {3: {"a": 0.6, "b": 0.5, "c": 0.4}, 7: {"a": 0.4, "b": 0.5, "c": 0.6}})
    sec = SD.build_section(load_runs(runs), n_boot=50)
    sw = table(sec, "seeds_swaps")
    assert set(sw.display["Swap"]) == {"not tested"} and len(sw.display) == 3
    assert (sw.display[["Seed 3", "Seed 7"]] == "–").all().all()
    assert "3 not tested" in sec.verdict and "every p" not in sec.verdict
