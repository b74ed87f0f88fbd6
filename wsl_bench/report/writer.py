"""`write_report`: the report stage. Reads score tables from run folders, writes report/ files."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wsl_bench.io import atomic_path, write_text
from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.references import GUESS_REFERENCES
from wsl_bench.report import figures as F
from wsl_bench.report import gallery as G
from wsl_bench.report import label_mapping as LM
from wsl_bench.report import sanity as S
from wsl_bench.report import seeds as SD
from wsl_bench.report import summary_access as sa
from wsl_bench.report.families import method_families, reference_lines
from wsl_bench.report import tables as T
from wsl_bench.report.html import render_html
from wsl_bench.report.markdown import provenance_lines, render_markdown
from wsl_bench.report.runs import ReportInputError, RunSet, load_runs
from wsl_bench.report.style import method_colors, panel_groups


@dataclass
class Figure:
    """A written figure: file stem under figures/, its title and caption, and the PNG path."""

    stem: str
    title: str
    caption: str
    png: Path


def build_tables(rs: RunSet, sig: pd.DataFrame | None = None, zero_shot: list[str] | None = None) -> list[T.Table]:
    """Every table of the report, in reading order (AUROC only when the scorer gave AUROCs; `zero_shot`:
    the methods whose classification is zero-shot, said in the per-finding AUROC caption)."""
    out = [T.macro_table(rs, sig), T.iou_table(rs, sig), T.iobb_table(rs, sig), T.size_table(rs, sig)]
    paired = T.paired_table(rs, sig)
    out += [paired] if paired is not None else []
    out += T.policy_tables(rs)
    other = T.other_metrics_table(rs)
    if other is not None:
        out.append(other)
    auroc = T.auroc_table(rs)
    if auroc is not None:
        out.append(auroc)
    auroc_box = T.auroc_box_table(rs, zero_shot)
    if auroc_box is not None:
        out.append(auroc_box)
    out.append(T.runtime_table(rs))
    return out


def add_significance(
    rs: RunSet, reference: str, n_boot: int = 1000, seed: int = 0, per_class: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Paired patient-bootstrap comparisons of every method against `reference` (IoU and IoBB accuracy).

    Macro accuracy at every threshold over all boxes (`size_bin` "all"), and macro IoU accuracy within
    each box-size bin (the size table's cells); `per_class` adds every class over all boxes (a test per
    table cell, ~9x the work; worth it on NIH-sized box sets, noise on a few boxes per class).

    Returns a tidy frame (method, reference, metric, label, size_bin, threshold, diff, ci_low, ci_high,
    p_value, significant) and notes for the report (e.g. why no test could be run).
    """
    from wsl_bench.report.scoring_api import paired_comparison

    if not rs.same_data:
        return pd.DataFrame(), ["The runs scored different boxes, so no paired test against the reference was made."]
    ref = rs.methods[reference]
    ref_bins = {b: ref.per_box[ref.per_box["size_bin"].astype(str) == b] for b in sa.size_bins(ref.summary)}
    rows = []

    def add(name, a, b, metric, t, label, size_bin):
        c = paired_comparison(a, b, metric, t, label, rs.patients or None, n_boot, seed)
        rows.append(dict(method=name, reference=reference, metric=metric, label=label, size_bin=size_bin, threshold=t,
                         diff=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value, significant=c.significant))

    for name, m in rs.methods.items():
        if name == reference:
            continue
        labels = [lb for lb in BOX_FINDINGS if (m.per_box["label"] == lb).any() and (ref.per_box["label"] == lb).any()]
        labels = labels if per_class else []
        for metric, thresholds in (("iou_acc", sa.IOU_THRESHOLDS), ("iobb_acc", sa.IOBB_THRESHOLDS)):
            for t in thresholds:
                for label in (*labels, T.MACRO):
                    add(name, m.per_box, ref.per_box, metric, t, label, T.ALL_BOXES)
        for b, r_bin in ref_bins.items():
            a_bin = m.per_box[m.per_box["size_bin"].astype(str) == b]
            if a_bin.empty or r_bin.empty:
                continue
            for t in sa.IOU_THRESHOLDS:
                add(name, a_bin, r_bin, "iou_acc", t, T.MACRO, b)
    return pd.DataFrame(rows), []


def build_figures(
    rs: RunSet,
    tables: list[T.Table],
    out_dir: Path,
    colors: dict[str, str],
    panels: list[tuple[str, list[str]]] | None = None,
    ref_lines: list[str] | None = None,
) -> list[Figure]:
    """Accuracy curves (IoU and IoBB), per-size bars and the class matrix, as PNG + PDF.

    With more than one family panel (`panels`), the curves and the size figure are small multiples
    (one panel per family, the references `ref_lines` in every panel); otherwise one panel per class."""
    by_name = {t.name: t for t in tables}
    refs = {n: m.is_reference for n, m in rs.methods.items()}
    if panels and len(panels) > 1:
        return _family_figures(rs, by_name, out_dir, colors, panels, ref_lines or [], refs)
    out = []
    iou = by_name["iou_accuracy"].long
    out.append(Figure("iou_curves", "IoU accuracy vs T(IoU)", "Per class and macro; shaded: 95 % bootstrap CI.",
                      F.save_figure(F.accuracy_curves(iou, colors, refs, "T(IoU)"), out_dir, "iou_curves")))
    iobb = by_name["iobb_accuracy"].long
    iobb = iobb[iobb["row"] == "Acc."]
    out.append(Figure("iobb_curves", "IoBB accuracy vs T(IoBB)", "Per class and macro; shaded: 95 % bootstrap CI.",
                      F.save_figure(F.accuracy_curves(iobb, colors, refs, "T(IoBB)"), out_dir, "iobb_curves")))
    size = by_name["size_bins"].long
    if len(size):
        out.append(Figure("size_bars", "IoU accuracy by box size", "Macro IoU accuracy per ground-truth size bin; whiskers: 95 % CI.",
                          F.save_figure(F.size_bars(size, colors), out_dir, "size_bars")))
    out.append(Figure("class_matrix", f"Method × class at T(IoU) = {sa.HEADLINE_IOU}", "IoU accuracy per method and class.",
                      F.save_figure(F.class_matrix(iou, colors), out_dir, "class_matrix")))
    return out


def _family_figures(rs, by_name, out_dir, colors, panels, ref_lines, refs) -> list[Figure]:
    """The many-method layout: accuracy curves and size dots with one panel per method family."""
    out = []
    iou = by_name["iou_accuracy"].long
    groups = " · ".join(t for t, _ in panels)
    cap = (f"Macro accuracy, one panel per method family ({groups}); shaded: 95 % bootstrap CI. Drawn in every panel: "
           "the guesses (grey, dashed) and the supervised ceiling (black, dotted) where the run has them. Per-class "
           "values: the tables and the class matrix.")
    out.append(Figure("iou_curves", "IoU accuracy vs T(IoU), by method family", cap,
                      F.save_figure(F.family_curves(iou, colors, panels, ref_lines, refs, "T(IoU)"), out_dir, "iou_curves")))
    iobb = by_name["iobb_accuracy"].long
    iobb = iobb[iobb["row"] == "Acc."]
    out.append(Figure("iobb_curves", "IoBB accuracy vs T(IoBB), by method family", cap,
                      F.save_figure(F.family_curves(iobb, colors, panels, ref_lines, refs, "T(IoBB)"), out_dir, "iobb_curves")))
    size = by_name["size_bins"].long
    if len(size):
        out.append(Figure("size_bars", "IoU accuracy by box size",
                          "Macro IoU accuracy per ground-truth size bin, one row per method (grouped by family, the "
                          "references last); whiskers: 95 % CI.",
                          F.save_figure(F.size_dots(size, colors, panels, ref_lines), out_dir, "size_bars")))
    out.append(Figure("class_matrix", f"Method × class at T(IoU) = {sa.HEADLINE_IOU}", "IoU accuracy per method and class.",
                      F.save_figure(F.class_matrix(iou, colors), out_dir, "class_matrix")))
    return out


def build_gallery(
    rs: RunSet,
    out_dir: Path,
    colors: dict[str, str],
    verdicts: dict[str, str] | None = None,
    pages: list[list[str]] | None = None,
) -> tuple[list[G.Tile], list[Figure], list[str]]:
    """Gallery tiles (for the HTML) and the gallery figures (same images; best and worst), one page per
    list of methods in `pages` (default: `G.PAGE_METHODS` methods a page in report order); `verdicts`:
    the failed sanity checks written in red under a method's name."""
    from wsl_bench.report.scoring_api import predicted_boxes

    notes: list[str] = []
    failed: set[str] = set()

    def boxes_for(m, heatmap, size, label):
        if m.name in failed:
            return None
        try:
            return predicted_boxes(m.summary, heatmap, size, label)
        except (KeyError, ValueError) as exc:  # no threshold for this class, or a policy not registered here
            failed.add(m.name)
            notes.append(f"Gallery of {m.name}: no predicted boxes ({exc}).")
            return None

    if not rs.gallery_path.is_file():
        return [], [], [f"No gallery: {rs.gallery_path} is missing."]
    tiles = G.build_gallery(rs, out_dir / "gallery", colors, boxes_for)
    pages = pages or G.gallery_pages([("", rs.names)])
    figs = []
    for base, title, caption, make in (
        ("gallery_same_images", "Gallery: the same images for every method",
         "Heatmap overlay, ground truth (green), predicted boxes (method colour); failed sanity checks in red.",
         G.gallery_figure),
        ("gallery_best_worst", "Gallery: best and worst cases per method",
         "Each method's highest and lowest best-IoU boxes; failed sanity checks in red.", G.extremes_figure),
    ):
        for i, page in enumerate(pages):
            fig = make(tiles, page, colors, verdicts)
            if fig is None:
                continue
            stem = base if i == 0 else f"{base}_{i + 1}"
            page_title = title if len(pages) == 1 else f"{title} ({i + 1}/{len(pages)}: {page[0]} … {page[-1]})"
            figs.append(Figure(stem, page_title, caption, F.save_raster_figure(fig, out_dir / "figures", stem)))
    return tiles, figs, notes


def regenerate_command(run_dirs: list[Path], out_dir: Path, reference: str | None) -> str:
    parts = ["wsl-bench", "report", *map(str, run_dirs), "--out", str(out_dir)]
    if reference:
        parts += ["--reference", reference]
    return shlex.join(parts)


def clear_previous_report(out_dir: Path) -> None:
    """Remove tables/, figures/ and gallery/ of an earlier report in `out_dir`, so no stale file survives
    (only when out_dir holds a wsl-bench report, never a folder of the user's)."""
    import shutil

    md = out_dir / "report.md"
    if md.is_file() and md.read_text(encoding="utf-8").startswith("# wsl-bench report"):
        for sub in ("tables", "figures", "gallery"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)


def default_reference(rs: RunSet) -> str | None:
    """The first method the run was asked for (usually the proposed one), None with a single method."""
    return rs.names[0] if len(rs.names) > 1 else None


def write_report(
    run_dirs: list[Path],
    out_dir: Path,
    reference: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    per_class_tests: bool = False,
) -> Path:
    """Write report.md, index.html, tables/ and figures/ under `out_dir`; returns the report.md path.

    `reference` is the method every other one is tested against (paired patient bootstrap, macro
    accuracy at every threshold; `per_class_tests` also tests every class); default: the first
    method of the first run.
    """
    run_dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out_dir)
    rs = load_runs(run_dirs)
    if reference is not None and reference not in rs.methods:
        raise ReportInputError(f"--reference {reference!r} is not a method of these runs; choose one of {', '.join(rs.methods)}")
    command = regenerate_command(run_dirs, out_dir, reference)
    reference = reference or default_reference(rs)
    families = method_families(rs)
    ref_lines = reference_lines(rs)
    panels = panel_groups([n for n in rs.names if n in families], families)
    colors = method_colors(rs.names, {n: m.is_reference for n, m in rs.methods.items()}, panels if len(panels) > 1 else None)
    notes: list[str] = []
    missing_refs = [r for r in GUESS_REFERENCES if not any(m.method == r for m in rs.methods.values())]
    if missing_refs:
        notes.append(f"Sanity baselines missing from these runs: {', '.join(missing_refs)} (`wsl-bench run` adds them).")
    for run_dir, manifest in rs.manifests.items():
        for method, failure in sorted((manifest.get("failures") or {}).items()):
            error = " ".join(str(failure.get("error", "")).split())
            notes.append(f"Failed in {run_dir.name}: {method} ({failure.get('stage', '?')} stage: {error}); it has no "
                         "scores here. Re-run the same `wsl-bench run` command after fixing the cause.")

    sig = pd.DataFrame()
    if reference is not None:
        sig, more = add_significance(rs, reference, n_boot=n_boot, seed=seed, per_class=per_class_tests)
        notes += more
    clear_previous_report(out_dir)
    sanity = S.build_section(rs)
    seeds = SD.build_section(rs, colors, n_boot=n_boot, seed=seed)
    if seeds is not None and seeds.reason:
        notes.append(f"No section \"{SD.SECTION_TITLE}\": {seeds.reason}.")
        seeds = None
    tables = build_tables(rs, sig, zero_shot=[n for n, f in families.items() if f == "afloc"])
    for t in [*sanity.tables, *(seeds.tables if seeds else [])]:
        T.write_table(t, out_dir / "tables")
    if not sig.empty:
        with atomic_path(out_dir / "tables" / "significance.csv") as tmp:
            sig.to_csv(tmp, index=False, float_format="%.10g")
    for t in tables:
        T.write_table(t, out_dir / "tables")
    mapping = LM.write_section(rs, out_dir / "tables")

    figures = build_figures(rs, tables, out_dir / "figures", colors, panels, ref_lines)
    verdicts = {n: a.verdict for n, a in sanity.verdicts.items() if a.fails}
    others = [n for n in rs.names if n not in families and n not in ref_lines]
    pages = G.gallery_pages([*panels, ("others", others), ("references", ref_lines)])
    tiles, gfigs, gnotes = build_gallery(rs, out_dir, colors, verdicts, pages)
    figures += gfigs
    notes += gnotes

    provenance = provenance_lines(rs)
    md = render_markdown(rs, tables, [(f.title, f"figures/{f.png.name}") for f in figures], reference, notes, command, sanity,
                         seeds, LM.section_markdown(mapping) if mapping is not None else [])
    write_text(out_dir / "index.html",
               render_html(rs, out_dir, tables, figures, tiles, colors, reference, notes, command, provenance, sanity, seeds,
                           mapping))
    path = out_dir / "report.md"
    write_text(path, md)
    return path

