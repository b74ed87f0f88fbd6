"""The report stage: tables read back the scorer's numbers exactly, files are complete, errors are clear."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_report_helpers import fake_report, make_fake_run  # noqa: F401 - fake_report is a fixture

from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.report import ReportInputError, load_runs, write_report
from wsl_bench.report import summary_access as sa
from wsl_bench.report.gallery import render_tile, select_extremes, select_same_cases
from wsl_bench.report.style import GT_COLOR, method_colors
from wsl_bench.report.tables import fmt_cell, to_markdown

TABLES = ("macro_iou_accuracy", "iou_accuracy", "iobb_accuracy", "size_bins", "paired_differences", "other_metrics", "auroc",
          "auroc_box_findings", "runtime")
FIGURES = ("iou_curves", "iobb_curves", "size_bars", "class_matrix", "gallery_same_images", "gallery_best_worst")


def test_report_writes_every_file(fake_report):
    _, out = fake_report
    assert (out / "report.md").is_file() and (out / "index.html").is_file()
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    for stem in FIGURES:
        assert (out / "figures" / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
        with Image.open(out / "figures" / f"{stem}.png") as im:
            assert round(im.info["dpi"][0]) == 300


def test_tables_read_back_the_summary_exactly(fake_report):
    run, out = fake_report
    long = pd.read_csv(out / "tables" / "iou_accuracy.csv", dtype={"threshold": str})
    for method in ("good", "medium", "random", "prior-center"):
        summary = json.loads((run / "scores" / method / "summary.json").read_text())
        for label in (*BOX_FINDINGS, "macro"):
            for t in sa.IOU_THRESHOLDS:
                row = long[(long.method == method) & (long.label == label) & (long.threshold == t)]
                assert len(row) == 1
                assert row["value"].iloc[0] == pytest.approx(summary["iou_acc"][label][t], abs=1e-6)
                assert row["ci_low"].iloc[0] == pytest.approx(summary["ci"]["iou_acc"][label][t][0], abs=1e-6)
    iobb = pd.read_csv(out / "tables" / "iobb_accuracy.csv", dtype={"threshold": str})
    summary = json.loads((run / "scores" / "good" / "summary.json").read_text())
    acc = iobb[(iobb.method == "good") & (iobb.row == "Acc.") & (iobb.label == "Mass") & (iobb.threshold == "0.25")]
    afp = iobb[(iobb.method == "good") & (iobb.row == "AFP") & (iobb.label == "Mass") & (iobb.threshold == "0.25")]
    assert acc["value"].iloc[0] == pytest.approx(summary["iobb_acc"]["Mass"]["0.25"], abs=1e-6)
    assert afp["value"].iloc[0] == pytest.approx(summary["afp"]["Mass"]["0.25"], abs=1e-6)
    other = pd.read_csv(out / "tables" / "other_metrics.csv").set_index(["method", "label"])
    for key in ("pointing", "miou", "cnr"):
        assert other.loc[("good", key), "value"] == pytest.approx(summary[key]["macro"], abs=1e-6)
        assert other.loc[("good", key), "ci_low"] == pytest.approx(summary["ci"][key]["macro"][0], abs=1e-6)
    auroc = pd.read_csv(out / "tables" / "auroc.csv").set_index(["method", "label"])
    assert auroc.loc[("good", "mean"), "value"] == pytest.approx(summary["auroc"]["mean"], abs=1e-6)
    assert auroc.loc[("good", "Mass"), "value"] == pytest.approx(summary["auroc"]["per_class"]["Mass"], abs=1e-6)


def test_auroc_per_box_finding_shows_each_findings_ci(fake_report):
    """The per-finding AUROC table shows every box finding's AUROC with the scorer's bootstrap CI in the
    cell (Markdown, LaTeX, HTML), and its CSV equals summary["auroc"]."""
    from wsl_bench.labels import box_to_finding

    run, out = fake_report
    long = pd.read_csv(out / "tables" / "auroc_box_findings.csv").set_index(["method", "label"])
    assert sorted(set(long.index.get_level_values("label"))) == sorted(box_to_finding(b) for b in BOX_FINDINGS)
    md = (out / "report.md").read_text()
    part = md.split("## Classification AUROC per box finding, with 95 % CIs")[1].split("\n## ")[0]
    html = (out / "index.html").read_text()
    for method in ("good", "medium", "random", "prior-center"):
        auroc = json.loads((run / "scores" / method / "summary.json").read_text())["auroc"]
        row = next(line for line in part.splitlines() if line.startswith(f"| {method} "))
        for finding, v in auroc["per_class"].items():
            if (method, finding) not in long.index:
                continue  # the 6 findings without boxes are in the `auroc` table only
            lo, hi = auroc["ci"][finding]
            assert long.loc[(method, finding), "value"] == pytest.approx(v, abs=1e-9)
            assert long.loc[(method, finding), ["ci_low", "ci_high"]].tolist() == pytest.approx([lo, hi], abs=1e-9)
            assert f"{v:.2f} [{lo:.2f}, {hi:.2f}]" in row
    assert 'data-table="auroc_box_findings"' in html
    assert "[" in (out / "tables" / "auroc_box_findings.tex").read_text().split("\\midrule")[1]


def test_auroc_per_box_finding_names_the_zero_shot_methods(fake_report):
    from wsl_bench.report.tables import auroc_box_table

    rs = load_runs([fake_report[0]])
    assert "zero-shot" not in auroc_box_table(rs).caption
    assert "; good: zero-shot (prompt scores" in auroc_box_table(rs, zero_shot=["good", "absent"]).caption


def test_markdown_shows_the_headline_and_the_sanity_baselines_last(fake_report):
    run, out = fake_report
    md = (out / "report.md").read_text()
    assert md.splitlines()[2].startswith("Regenerate with: `wsl-bench report ")
    summary = json.loads((run / "scores" / "good" / "summary.json").read_text())
    macro = summary["iou_acc"]["macro"]["0.5"]
    lo, hi = summary["ci"]["iou_acc"]["macro"]["0.5"]
    headline = md.split("## Macro IoU accuracy")[1].split("##")[0]
    good_row = next(line for line in headline.splitlines() if line.startswith("| good "))
    assert f"{macro:.2f} [{lo:.2f}, {hi:.2f}]" in good_row
    rows = [line.split("|")[1].strip() for line in headline.splitlines() if line.startswith("| ") and "Method" not in line]
    assert rows == ["good", "medium", "random", "prior-center"]
    assert "Sanity baselines missing from these runs: prior-lung" in md
    for stem in FIGURES:
        assert f"(figures/{stem}.png)" in md


def test_latex_escapes_and_bolds_the_best(fake_report):
    _, out = fake_report
    tex = (out / "tables" / "auroc.tex").read_text()
    assert "Pleural Thickening" in tex and "Pleural_Thickening" not in tex.replace("\\_", "")
    macro = (out / "tables" / "macro_iou_accuracy.tex").read_text()
    assert "\\textbf{" in macro and "\\multirow" not in macro


def test_gallery_tiles_exist_for_every_method(fake_report):
    _, out = fake_report
    for method in ("good", "medium", "random", "prior-center"):
        tiles = list((out / "gallery" / method).glob("*.jpg"))
        assert len(tiles) >= 8  # one per class of the same-image set, plus best and worst
    assert len(list((out / "gallery" / "_image").glob("*.jpg"))) == 8


def test_missing_scores_and_unknown_reference_are_clear_errors(tmp_path):
    run = make_fake_run(tmp_path / "run", n_images=8)
    with pytest.raises(ReportInputError, match="not a method of these runs"):
        write_report([run], tmp_path / "out", reference="nope")
    (run / "scores" / "good" / "per_box.csv").unlink()
    with pytest.raises(ReportInputError, match=r"scores/good/per_box\.csv is missing"):
        load_runs([run])
    shutil.rmtree(run / "scores")
    with pytest.raises(ReportInputError, match="no scores/ folder"):
        load_runs([run])
    with pytest.raises(ReportInputError, match="does not exist"):
        load_runs([tmp_path / "absent"])


def test_per_box_without_required_columns_names_them(tmp_path):
    run = make_fake_run(tmp_path / "run", n_images=8)
    pb = pd.read_csv(run / "scores" / "medium" / "per_box.csv").drop(columns=["best_iou"])
    pb.to_csv(run / "scores" / "medium" / "per_box.csv", index=False)
    with pytest.raises(ReportInputError, match="lacks column\\(s\\) best_iou"):
        load_runs([run])


def test_two_runs_with_the_same_method_get_distinct_names(tmp_path):
    a = make_fake_run(tmp_path / "a", n_images=8, methods={"good": 0.0, "random": None})
    b = make_fake_run(tmp_path / "b", n_images=8, methods={"good": 0.3, "other": 0.1})
    rs = load_runs([a, b])
    assert rs.names == ["a/good", "b/good", "other", "random"]
    assert rs.same_data  # same seed, same boxes: paired tests and galleries are valid


def test_method_colours_are_distinct_stable_and_grey_for_baselines():
    names = ["clarity", "gradcam", "rollout", "prior-center", "random"]
    c1 = method_colors(names)
    assert len(set(c1.values())) == len(names)
    assert c1 == method_colors(names)
    for ref in ("prior-center", "random"):
        r, g, b = (int(c1[ref][i : i + 2], 16) for i in (1, 3, 5))
        assert r == g == b  # greys
    many = method_colors([f"m{i}" for i in range(14)])
    assert len(set(many.values())) == 14
    for colour in many.values():  # no method is drawn in a grey, which would read as a sanity reference
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) > 16


def test_summary_access_accepts_both_spellings_and_ci_forms():
    s = {"iou_acc": {"Infiltrate": {"0.1": 0.5}}, "ci": {"iou_acc": {"Infiltrate": {"0.1": {"low": 0.4, "high": 0.6}}}},
         "iobb_acc_ci": {"macro": {"0.25": [0.1, 0.2]}}}
    assert sa.value(s, "iou_acc", "Infiltration", "0.1") == 0.5
    assert sa.value(s, "iou_acc", "Infiltrate", 0.1) == 0.5
    assert sa.ci(s, "iou_acc", "Infiltration", "0.1") == (0.4, 0.6)
    assert sa.ci(s, "iobb_acc", "macro", "0.25") == (0.1, 0.2)
    assert math.isnan(sa.value(s, "iou_acc", "Mass", "0.1"))
    assert all(math.isnan(v) for v in sa.ci(s, "iou_acc", "Mass", "0.1"))


def test_cell_format_and_markdown_layout():
    assert fmt_cell(0.5, 0.4, 0.61, sig=True) == "0.50 [0.40, 0.61]*"
    assert fmt_cell(float("nan")) == "–"
    df = pd.DataFrame({"a": ["1", "2|3"]}, index=pd.MultiIndex.from_tuples([("0.1", "x"), ("0.1", "y")], names=["T", "M"]))
    bold = pd.DataFrame({"a": [True, False]}, index=df.index)
    assert to_markdown(df, bold).splitlines() == ["| T | M | a |", "|---|---|---:|", "| 0.1 | x | **1** |", "|  | y | 2\\|3 |"]


def test_extremes_and_same_cases_are_deterministic():
    pb = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "label": ["Mass"] * 4, "x": [0, 1, 2, 3], "y": 0, "w": 5, "h": 5,
                       "best_iou": [0.2, 0.9, 0.0, 0.0], "best_iobb": [0.3, 0.9, 0.5, 0.1]})
    best, worst = select_extremes(pb, k=2)
    assert [c.image_id for c in best] == ["b", "a"]
    assert [c.image_id for c in worst] == ["d", "c"]  # ties on IoU broken by IoBB
    boxes = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "label": ["Mass", "Mass", "Mass", "Nodule"], "x": 0, "y": 0,
                          "w": [10, 20, 30, 5], "h": [10, 20, 30, 5]})
    cases = select_same_cases(boxes)
    assert [(c.image_id, c.label) for c in cases] == [("b", "Mass"), ("d", "Nodule")]  # median-area box per class


def test_tile_draws_the_ground_truth_box_where_it_is():
    img = np.full((100, 200), 128, np.uint8)  # original 100x200 (h, w), shown at 64x64
    tile = render_tile(img, (100, 200), (50.0, 25.0, 100.0, 50.0), None, None, "#ff0000", side=64)
    gt = tuple(int(GT_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(tile[16, 30]) == gt  # top edge of the box: y = 25/100*64 = 16, x from 50/200*64 = 16 to 48
    assert tuple(tile[40, 40]) == (128, 128, 128)  # inside the box, untouched


def test_tile_draws_boxes_smaller_than_one_tile_pixel():
    # a 1-px box on a 1024-px image is 1/16 of a 64-px tile: it must draw as a dot, not raise
    img = np.full((1024, 1024), 128, np.uint8)
    tile = render_tile(img, (1024, 1024), (500.0, 500.0, 1.0, 1.0), None, [(10.0, 10.0, 2.0, 2.0)], "#ff0000", side=64)
    gt = tuple(int(GT_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(tile[31, 31]) == gt


def test_significance_marks_are_the_paired_bootstrap_of_the_scorer(fake_report):
    from wsl_bench.metrics import paired_bootstrap

    run, out = fake_report
    sig = pd.read_csv(out / "tables" / "significance.csv", dtype={"threshold": str})
    assert set(sig["reference"]) == {"good"} and "good" not in set(sig["method"])
    a = pd.read_csv(run / "scores" / "medium" / "per_box.csv", dtype={"image_id": str, "patient_id": str})
    b = pd.read_csv(run / "scores" / "good" / "per_box.csv", dtype={"image_id": str, "patient_id": str})
    direct = paired_bootstrap(a, b, "iou_acc@0.3", aggregate="macro", n_boot=200, seed=0)
    row = sig[(sig.method == "medium") & (sig.metric == "iou_acc") & (sig.label == "macro") & (sig.threshold == "0.3")]
    assert row["p_value"].iloc[0] == pytest.approx(direct["p_value"]) and row["diff"].iloc[0] == pytest.approx(direct["diff"])
    macro = pd.read_csv(out / "tables" / "macro_iou_accuracy.csv", dtype={"threshold": str})
    tested = macro[macro.method != "good"]
    assert (tested["significant"] == (tested["p_value"] < 0.05)).all()
    assert tested["significant"].any()  # "random" is far worse than "good" on these maps
    md = (out / "report.md").read_text()
    assert "\\*" in md.split("## Macro IoU accuracy")[1].split("##")[0]


def test_size_bin_tests_are_the_paired_bootstrap_within_the_bin(fake_report):
    from wsl_bench.metrics import paired_bootstrap

    run, out = fake_report
    sig = pd.read_csv(out / "tables" / "significance.csv", dtype={"threshold": str})
    a = pd.read_csv(run / "scores" / "medium" / "per_box.csv", dtype={"image_id": str, "patient_id": str})
    b = pd.read_csv(run / "scores" / "good" / "per_box.csv", dtype={"image_id": str, "patient_id": str})
    sizes = pd.read_csv(out / "tables" / "size_bins.csv", dtype={"threshold": str})
    bins = [x for x in dict.fromkeys(sizes["size_bin"]) if (a["size_bin"] == x).any()]
    assert set(sig["size_bin"]) == {"all", *bins}
    for size_bin in bins:
        direct = paired_bootstrap(a[a.size_bin == size_bin], b[b.size_bin == size_bin], "iou_acc@0.3", n_boot=200, seed=0)
        row = sig[(sig.method == "medium") & (sig.size_bin == size_bin) & (sig.threshold == "0.3")]
        assert len(row) == 1 and row["diff"].iloc[0] == pytest.approx(direct["diff"])
        assert row["p_value"].iloc[0] == pytest.approx(direct["p_value"])
        # the difference of the bin's macro accuracies the size table shows
        cell = sizes[(sizes.size_bin == size_bin) & (sizes.threshold == "0.3")].set_index("method")["value"]
        assert direct["diff"] == pytest.approx(cell["medium"] - cell["good"])
    tested = sizes[sizes.method != "good"]
    assert (tested["significant"] == (tested["p_value"] < 0.05)).all()
    paired = pd.read_csv(out / "tables" / "paired_differences.csv", dtype={"threshold": str})
    assert set(paired["threshold"]) == {"0.3", "0.5"} and set(paired["size_bin"]) == {"all", *bins}
    assert "good" not in set(paired["method"])
    md = (out / "report.md").read_text()
    section = md.split("## Paired differences against good")[1].split("\n## ")[0]
    assert "T(IoU) 0.3 · all" in section and "T(IoU) 0.5 · small" in section and "p " in section


@pytest.mark.parametrize("policy", ["calibrated", "maxboxacc"])
def test_policy_tables_state_what_the_scorer_chose(tmp_path, policy):
    from wsl_bench.report.tables import policy_tables

    run = make_fake_run(tmp_path / "run", n_images=16, methods={"good": 0.0, "random": None}, policy=policy)
    (table,) = policy_tables(load_runs([run]))
    summary = json.loads((run / "scores" / "good" / "summary.json").read_text())
    got = table.long[table.long.method == "good"].set_index("label")["value"]
    if policy == "calibrated":
        want = {k: v["tau"] for k, v in summary["calibration"]["thresholds"].items()}
    else:
        want = {k: v["maxboxacc_v2"] for k, v in summary["maxboxacc"]["per_class"].items()}
        want["macro"] = summary["maxboxacc"]["macro"]["maxboxacc_v2"]
    assert got.to_dict() == pytest.approx(want)


def test_cli_report_command(tmp_path):
    from typer.testing import CliRunner

    from wsl_bench.cli import app

    run = make_fake_run(tmp_path / "run", n_images=8, methods={"good": 0.0, "random": None})
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "out"), "--reference", "random", "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert "--reference random" in (tmp_path / "out" / "report.md").read_text().splitlines()[2]
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out2")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["report", "--help"])
    assert "Example: wsl-bench report" in res.output


def test_run_command_is_given_only_when_it_reproduces_the_config_hash(tmp_path):
    import yaml

    from wsl_bench.report.markdown import run_command
    from wsl_bench.run import build_config, run_config_hash

    run = make_fake_run(tmp_path / "run", n_images=8, methods={"gradcam": 0.0, "random": None})
    cfg = build_config(["gradcam"], preset="tiny", seed=3)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "config_hash": run_config_hash(cfg)}))
    assert run_command(load_runs([run]), run) == f"wsl-bench run --preset tiny --seed 3 --methods gradcam --out {run}"
    cfg["fit"]["max_epochs"] = 7  # as if made with --set fit.max_epochs=7: the command would not reproduce it
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "manifest.json").write_text(json.dumps({**manifest, "config_hash": run_config_hash(cfg)}))
    assert run_command(load_runs([run]), run) is None


def test_headline_markdown_for_the_readme(fake_report):
    from wsl_bench.report.markdown import headline_markdown

    _, out = fake_report
    snippet = headline_markdown(out, "reports/synth-quick")
    assert "| Method | T(IoU)=0.1 |" in snippet and "| good |" in snippet
    assert "(reports/synth-quick/figures/iou_curves.png)" in snippet
    assert "## " not in snippet  # only the headline section, no following heading


def test_bold_marks_the_best_accuracy_per_threshold_never_an_afp_row(fake_report):
    from wsl_bench.report.tables import iobb_table, iou_table

    run, _ = fake_report
    rs = load_runs([run])
    t = iobb_table(rs)
    kinds = t.display.index.get_level_values(2)
    assert not t.bold[np.asarray(kinds == "AFP")].to_numpy().any()
    acc = t.values[np.asarray(kinds == "Acc.")]["Macro"]
    bold = t.bold[np.asarray(kinds == "Acc.")]["Macro"]
    for thr in sa.IOBB_THRESHOLDS:
        vals, marks = acc.xs(thr, level=0), bold.xs(thr, level=0)
        if vals.max() > vals.min():
            assert marks.to_numpy().tolist() == (vals == vals.max()).to_numpy().tolist()
    iou = iou_table(rs)
    top = iou.values.xs("0.1", level=0)["Macro"]
    assert iou.bold.xs("0.1", level=0)["Macro"].to_numpy().tolist() == (top == top.max()).to_numpy().tolist()


def test_size_bins_run_small_to_large_whatever_the_json_key_order():
    s = {"by_size": {"large": {"area_fraction": [0.078, None]}, "medium": {"area_fraction": [0.025, 0.078]},
                     "small": {"area_fraction": [0.0, 0.025]}}}
    assert sa.size_bins(s) == ["small", "medium", "large"]


def test_latex_text_is_pdflatex_safe(fake_report):
    from wsl_bench.report.tables import _latex_escape

    assert _latex_escape("IoU > T, τ ≤ 0.5, 95 % Pleural_Thickening †") == (
        r"IoU $>$ T, $\tau$ $\le$ 0.5, 95 \% Pleural\_Thickening \dag{}"
    )
    assert _latex_escape("afloc − gradcam, −0.02") == r"afloc $-$ gradcam, $-$0.02"  # U+2212, not in OT1
    _, out = fake_report
    tex = (out / "tables" / "iobb_accuracy.tex").read_text()
    caption = next(line for line in tex.splitlines() if line.startswith("\\caption"))
    assert "$>$" in caption and ">" not in caption.replace("$>$", "")
    assert "\\cline" not in tex and "\\cmidrule(l)" in tex


def test_failed_methods_of_a_run_are_listed_in_the_markdown_and_html(tmp_path):
    run = make_fake_run(tmp_path / "run", n_images=8)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["failures"] = {"broken": {"stage": "fit", "error": "ValueError: weights file w.pt is truncated"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "report"
    write_report([run], out)
    expected = "broken (fit stage: ValueError: weights file w.pt is truncated)"
    assert expected in (out / "report.md").read_text()
    assert expected in (out / "index.html").read_text()


def test_figures_are_byte_reproducible(tmp_path, monkeypatch):
    """The same figure saved on two different days gives identical PNG and PDF bytes (no creation date):
    regenerating an unchanged report changes no file in git."""
    import matplotlib.pyplot as plt

    from wsl_bench.report.figures import save_figure

    for out, day in ((tmp_path / "a", "1700000000"), (tmp_path / "b", "1800000000")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", day)  # what matplotlib would stamp as the creation date
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        save_figure(fig, out, "line")
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"line.{ext}").read_bytes() == (tmp_path / "b" / f"line.{ext}").read_bytes()


def test_a_policy_not_registered_here_gets_a_gallery_note_not_a_failed_report(tmp_path):
    """Scores made with a plug-in policy this process has not registered: the report is written, and the gallery
    says it cannot draw that method's boxes."""
    run = make_fake_run(tmp_path / "run", n_images=8, methods={"good": 0.0, "random": None})
    for name in ("good", "random"):
        path = run / "scores" / name / "summary.json"
        summary = json.loads(path.read_text())
        summary["policy"] = "plugin-policy"
        path.write_text(json.dumps(summary))
    out = tmp_path / "report"
    write_report([run], out, n_boot=20)
    md = (out / "report.md").read_text()
    for name in ("good", "random"):
        assert f"Gallery of {name}: no predicted boxes (unknown policy 'plugin-policy'" in md
    assert "register that policy before reading these scores" in md
    assert list((out / "gallery").rglob("*.jpg"))  # the tiles are drawn, without that method's boxes


def test_provenance_names_the_cpu_only_when_the_manifest_records_it(fake_report, tmp_path):
    from wsl_bench.report.markdown import provenance_lines

    run = shutil.copytree(fake_report[0], tmp_path / "run")  # the fixture is shared: leave it as it is
    assert "CPU" not in "\n".join(provenance_lines(load_runs([run])))  # older manifests: nothing is made up
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["platform"] = {"machine": "x86_64", "cpu_capability": "AVX512", "cpu": "AMD EPYC"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    line = "\n".join(provenance_lines(load_runs([run])))
    assert "CPU AMD EPYC (AVX512 kernels)" in line
