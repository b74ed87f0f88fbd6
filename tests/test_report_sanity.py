"""The report's first section ("Does each method localize beyond a guess?"), the family figures and the
paged galleries: verdict rules on known summaries, the section's place and files, sortable HTML, and a
many-method report whose galleries stay under 3 MB."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from test_report_helpers import fake_report, make_fake_run, make_many_method_run, toy_sanity  # noqa: F401 - fixture

from wsl_bench.report import load_runs, write_report
from wsl_bench.report.browser import find_chromium
from wsl_bench.report.runs import MethodScores
from wsl_bench.report.sanity import SECTION_TITLE, assess, gain_cells_table, sanity_table
from wsl_bench.report.style import method_colors, panel_groups


def _method(sanity: dict | None, name: str = "m", acc: float = 0.4) -> MethodScores:
    summary = {"iou_acc": {"macro": {"0.3": acc}}, "ci": {"iou_acc": {"macro": {"0.3": [acc - 0.1, acc + 0.1]}}}}
    if sanity is not None:
        summary["sanity"] = sanity
    return MethodScores(name=name, method=name, run_dir=Path("."), per_box=pd.DataFrame(), summary=summary)


# -- verdict rules: known answers ----------------------------------------------------------------


def test_a_method_that_passes_every_check_localizes():
    a = assess(_method(toy_sanity()))
    assert a.verdict == "localizes" and not a.fails
    assert a.gain == (0.10, 0.05, 0.15) and a.right_class == (0.6, 0.5, 0.7)
    assert a.randomisation == (0.1, 0.0, 0.2) and a.prior_name == "prior-lung" and a.prior[0] == 0.2
    assert a.accuracy == pytest.approx((0.4, 0.3, 0.5))


@pytest.mark.parametrize(
    "kwargs, verdict",
    [
        (dict(randomisation=(0.8, 0.51, 0.9)), "ignores the model"),
        (dict(randomisation=(0.6, 0.5, 0.7)), "localizes"),  # CI low must be above 0.5
        (dict(gain=(-0.08, -0.12, -0.01, 0.01)), "below a guess"),
        (dict(gain=(0.01, -0.03, 0.05, 0.6)), "no better than a guess"),
        (dict(gain=(0.02, 0.0, 0.05, 0.06)), "no better than a guess"),  # a CI touching 0 contains it
        (dict(right_class=(0.2, 0.125, 0.3)), "not class-specific"),  # CI low at chance
        (dict(right_class=(0.2, 0.126, 0.3)), "localizes"),
        (dict(class_correlation=0.9), "not class-specific"),
        (dict(class_correlation=0.89), "localizes"),
        (dict(priors={"prior-lung": 0.3, "prior-center": 0.8}), "draws a prior"),
        (dict(priors={"prior-lung": 0.79}), "localizes"),
        (dict(gain=(-0.1, -0.2, -0.05, 0.001), class_correlation=0.95, priors={"prior-center": 0.9}),
         "below a guess; not class-specific; draws a prior"),
    ],
)
def test_each_rule_triggers_on_its_own_input(kwargs, verdict):
    a = assess(_method(toy_sanity(**kwargs)))
    assert a.verdict == verdict
    assert a.fails == (verdict != "localizes")


@pytest.mark.parametrize(
    "kwargs, missing",
    [
        (dict(randomisation=None), "randomisation"),
        (dict(gain=None), "gain over a guess"),
        (dict(right_class=None, class_correlation=None), "class specificity"),
        (dict(right_class=None), "class specificity"),  # the correlation passes, the rate is missing: no pass
        (dict(priors={}), "prior correlation"),
    ],
)
def test_a_missing_input_is_not_computed_never_a_pass(kwargs, missing):
    a = assess(_method(toy_sanity(**kwargs)))
    assert a.not_computed == [missing]
    assert a.verdict == f"not computed: {missing}" and a.verdict != "localizes" and not a.fails


def test_a_failure_with_a_missing_input_lists_both():
    a = assess(_method(toy_sanity(right_class=None, class_correlation=0.95, randomisation=None)))
    assert a.verdict == "not class-specific; not computed: randomisation" and a.fails


def test_no_sanity_block_means_every_check_not_computed():
    a = assess(_method(None))
    assert a.not_computed == ["randomisation", "gain over a guess", "class specificity", "prior correlation"]
    assert a.verdict.startswith("not computed: ") and not a.fails


def test_null_parts_of_the_block_are_not_computed():
    s = toy_sanity()
    s["class_specificity"] = None
    s["gain_over_guess"] = None
    s["randomization"] = {"status": "computed", "depths": [{"name": "all", "fraction": 1.0, "mean": None, "ci": [None, None]}]}
    s.pop("prior_correlation")
    a = assess(_method(s))
    assert a.not_computed == ["randomisation", "gain over a guess", "class specificity", "prior correlation"]


def test_references_read_as_references_whatever_they_score():
    guess = toy_sanity(role="guess", gain=(0.0, -0.1, 0.1, 1.0), class_correlation=1.0)
    assert assess(_method(guess, "prior-lung")).verdict == "reference (guess)"
    assert assess(_method(toy_sanity(role="ceiling"), "oracle-seg")).verdict == "reference (ceiling)"
    # without a role in the summary, the registered name decides
    assert assess(_method(None, "random")).verdict == "reference (guess)"
    assert assess(_method(None, "oracle-seg")).verdict == "reference (ceiling)"
    assert not assess(_method(guess, "prior-lung")).fails


def test_randomisation_reads_the_all_depth():
    s = toy_sanity()
    s["randomization"]["depths"] = [{"name": "head", "fraction": 0.1, "mean": 0.9, "ci": [0.85, 0.95]},
                                    {"name": "all", "fraction": 1.0, "mean": 0.2, "ci": [0.1, 0.3]},
                                    {"name": "late", "fraction": 0.5, "mean": 0.7, "ci": [0.6, 0.8]}]
    assert assess(_method(s)).randomisation == (0.2, 0.1, 0.3)


def test_the_floor_left_out_is_read_and_named_in_a_note():
    from types import SimpleNamespace

    from wsl_bench.report.sanity import build_section

    s = toy_sanity()
    s["randomization"]["depths"][-1]["floor_share"] = 0.44
    s["class_specificity"]["class_correlation"]["floor_share"] = 0.27
    assert assess(_method(s)).floor_share == pytest.approx(0.44)  # the larger of the two
    assert assess(_method(toy_sanity())).floor_share == 0.0  # summaries without the field read 0
    rs = SimpleNamespace(methods={"m": _method(s), "plain": _method(toy_sanity(), "plain")})  # what the section reads
    notes = " ".join(build_section(rs).notes)
    assert "`m` 44%" in notes and "`plain`" not in notes


# -- tables from a run with sanity blocks --------------------------------------------------------

SANITY_METHODS = {"good": 0.0, "medium": 0.5, "bare": 0.3, "random": None, "prior-center": 1.0}


@pytest.fixture(scope="module")
def sanity_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    sanity = {"good": toy_sanity(cells={("class", "Mass"): (-0.2, -0.3, -0.1, 0.001), ("size_bin", "small"): (0.01, -0.05, 0.07, 0.7)}),
              "medium": toy_sanity(gain=(0.01, -0.04, 0.06, 0.5), randomisation=(0.7, 0.6, 0.8)),
              "random": toy_sanity(role="guess"), "prior-center": toy_sanity(role="guess")}
    run = make_fake_run(root / "run", n_images=16, methods=SANITY_METHODS, sanity=sanity)
    write_report([run], root / "out", n_boot=50)
    return run, root / "out"


def test_the_section_comes_first_in_report_md(sanity_report):
    _, out = sanity_report
    md = (out / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == f"## {SECTION_TITLE}" and headings[1] == "## Macro IoU accuracy (headline)"
    section = md.split(f"## {SECTION_TITLE}")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in section.splitlines()
            if line.startswith("| ") and "Method" not in line and line.count("|") == 9}
    assert rows == {"good": "localizes", "medium": "ignores the model; no better than a guess",
                    "bare": "not computed: randomisation, gain over a guess, class specificity, prior correlation",
                    "random": "reference (guess)", "prior-center": "reference (guess)"}
    assert "Verdict rules:" in section and "**draws a prior**" in section
    assert "### Where each method beats the best guess (T(IoU) = 0.3)" in section
    assert "No sanity instruments in the scores of: `bare`" in section


def test_sanity_tables_are_written_and_read_back_the_summary(sanity_report):
    run, out = sanity_report
    for name in ("sanity", "sanity_gain_cells"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "\\bottomrule" in tex
    long = pd.read_csv(out / "tables" / "sanity.csv", dtype={"threshold": str}).set_index(["method", "label"])
    summary = json.loads((run / "scores" / "good" / "summary.json").read_text())
    assert long.loc[("good", "iou_acc"), "value"] == pytest.approx(summary["iou_acc"]["macro"]["0.3"])
    assert long.loc[("good", "gain_over_guess"), "ci_high"] == pytest.approx(0.15)
    assert long.loc[("medium", "randomisation_correlation"), "ci_low"] == pytest.approx(0.6)
    assert long.loc[("medium", "gain_over_guess"), "verdict"] == "ignores the model; no better than a guess"
    cells = pd.read_csv(out / "tables" / "sanity_gain_cells.csv", dtype={"threshold": str})
    mass = cells[(cells.method == "good") & (cells.label == "Mass") & (cells.threshold == "0.3")].iloc[0]
    assert (mass.value, mass.ci_low, mass.ci_high, bool(mass.significant)) == (pytest.approx(-0.2), pytest.approx(-0.3),
                                                                               pytest.approx(-0.1), True)
    assert set(cells["threshold"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}  # every threshold in the CSV


def test_gain_cells_display_marks_and_colours(sanity_report):
    run, _ = sanity_report
    t = gain_cells_table(load_runs([run]))
    assert list(t.display.columns[:2]) == ["Macro", "Atelectasis"] and list(t.display.columns[-3:]) == [
        "small boxes", "medium boxes", "large boxes"]
    assert t.display.loc["good", "Mass"] == "-0.20 [-0.30, -0.10]*"
    assert t.display.loc["good", "small boxes"] == "+0.01 [-0.05, +0.07]"  # p 0.7: no mark
    assert t.cell_classes.loc["good", "Mass"] == "loss" and t.cell_classes.loc["good", "Macro"] == "gain"
    assert t.cell_classes.loc["good", "small boxes"] == ""
    assert "bare" not in t.display.index


def test_sanity_html_tables_are_sortable_and_verdicts_red(sanity_report):
    _, out = sanity_report
    html = (out / "index.html").read_text()
    assert html.index('id="sanity"') < html.index('id="tab-macro_iou_accuracy"')
    for name in ("sanity", "sanity_gain_cells"):
        assert f'<table class="sortable" data-table="{name}">' in html
    assert '<th data-type="text">Verdict</th>' in html
    assert 'addEventListener("click", function () { sortTable(table, i, th); })' in html
    assert re.search(r'<td data-v="ignores the model; no better than a guess" class="[^"]*\bfail\b', html)
    assert 'class="verdict fail">ignores the model; no better than a guess</span>' in html  # under gallery tiles


def test_without_sanity_blocks_the_section_says_not_computed(fake_report):
    _, out = fake_report
    md = (out / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == f"## {SECTION_TITLE}"
    assert "Not computed: no `summary.json` of these runs carries the sanity instruments" in md
    assert not (out / "tables" / "sanity.csv").exists()
    assert sanity_table(load_runs([fake_report[0]])) is None


@pytest.mark.skipif(find_chromium() is None and not os.environ.get("WSL_BENCH_REQUIRE_CHROMIUM"), reason="Chromium missing")
def test_clicking_a_sanity_header_sorts_it_in_chromium(sanity_report):
    from wsl_bench.report.browser import check_page

    _, out = sanity_report
    check = check_page(out / "index.html")
    assert check.ok and check.sorted_ok and check.n_tables == 11


# -- families, colours and the many-method report --------------------------------------------------


def test_panels_split_large_families_and_share_small_ones():
    fams = {**{f"c{i}": "cam" for i in range(8)}, "r1": "vit", "a": "attributions", "b": "can", "x": "clarity"}
    names = ["x", *(f"c{i}" for i in range(8)), "r1", "a", "b"]
    panels = panel_groups(names, fams, max_per_panel=6)
    assert panels == [("clarity · vit · attributions · can", ["x", "r1", "a", "b"]),
                      ("cam 1/2", ["c0", "c1", "c2", "c3"]), ("cam 2/2", ["c4", "c5", "c6", "c7"])]
    colors = method_colors([*names, "random"], None, panels)
    for _, members in panels:
        assert len({colors[n] for n in members}) == len(members)  # distinct within a panel
    assert len({colors[n] for n in names}) == len(names)  # and across panels here
    r, g, b = (int(colors["random"][i:i + 2], 16) for i in (1, 3, 5))
    assert r == g == b


def test_registered_methods_know_their_family():
    from wsl_bench.methods import available_methods, family_of_module

    fams = {n: i.family for n, i in available_methods().items()}
    assert fams["gradcam"] == "cam" and fams["rollout"] == "vit" and fams["clarity"] == "clarity"
    assert fams["prior-lung"] == "priors" and fams["occlusion"] == "attributions"
    assert family_of_module("clarity.method") == "clarity" and family_of_module("my_pkg.models.method") == "my_pkg"


@pytest.mark.slow
def test_many_methods_give_family_panels_and_galleries_under_3_mb(tmp_path):
    run = make_many_method_run(tmp_path / "run", n_images=16)
    out = tmp_path / "out"
    write_report([run], out, n_boot=20)
    galleries = sorted((out / "figures").glob("gallery_*"))
    same = sorted(p for p in galleries if p.name.startswith("gallery_same_images") and p.suffix == ".png")
    assert len(same) >= 3  # 28 methods, at most 10 a page
    for p in galleries:
        assert p.stat().st_size < 3_000_000, p.name
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert round(im.info["dpi"][0]) == 300
        else:
            assert p.read_bytes()[:4] == b"%PDF" and b"/DCTDecode" in p.read_bytes()  # JPEG inside
    md = (out / "report.md").read_text()
    assert "IoU accuracy vs T(IoU), by method family" in md
    for p in galleries:
        if p.suffix == ".png":
            assert f"(figures/{p.name})" in md
    html = (out / "index.html").read_text()
    assert html.count('<table class="sortable"') == 11
    assert "cam 1/2" in html  # the figure caption names the family panels
    assert 'class="verdict fail">below a guess</span>' in html
    with Image.open(out / "figures" / "iou_curves.png") as im:  # one panel per family: a 3-wide grid
        assert im.width > im.height
    assert math.isclose(sum(1 for p in galleries if p.suffix == ".pdf"), len(galleries) / 2)


def test_raster_figures_are_byte_reproducible_and_kept_under_the_budget(tmp_path, monkeypatch):
    """Gallery pages: identical bytes on another day; a budget too small for the lossless PNG gives a
    palette PNG, then a smaller raster whose recorded dpi keeps the printed size."""
    import matplotlib.pyplot as plt
    import numpy as np

    from wsl_bench.report.figures import save_raster_figure

    def fig():
        f, ax = plt.subplots(figsize=(2, 2))
        ax.imshow(np.random.default_rng(0).random((64, 64, 3)), interpolation="bilinear")
        return f

    for out, day in ((tmp_path / "a", "1700000000"), (tmp_path / "b", "1800000000")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", day)
        save_raster_figure(fig(), out, "g")
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"g.{ext}").read_bytes() == (tmp_path / "b" / f"g.{ext}").read_bytes()
    full = (tmp_path / "a" / "g.png").stat().st_size
    save_raster_figure(fig(), tmp_path / "c", "g", max_bytes=full // 2)
    with Image.open(tmp_path / "c" / "g.png") as im:
        assert (tmp_path / "c" / "g.png").stat().st_size <= full // 2
        with Image.open(tmp_path / "a" / "g.png") as ref:
            assert im.info["dpi"][0] / 300 == pytest.approx(im.width / ref.width, rel=0.01)
    assert (tmp_path / "c" / "g.pdf").stat().st_size <= full // 2
