"""The report's tables: tidy long frames read from the score tables, and their paper layouts.

Each table is built twice: a *long* frame (one row per method × label × threshold with value,
CI and significance columns) written as CSV for re-analysis, and a *wide* display frame (cells like
``0.62 [0.55, 0.69]*``) written as LaTeX booktabs, Markdown and HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.io import atomic_path, write_text
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, box_to_finding
from wsl_bench.report import summary_access as sa
from wsl_bench.report.runs import RunSet

MACRO = "macro"
SIG_MARK = "*"
ALL_BOXES = "all"  # significance.csv's size_bin for tests over every box
PAIRED_THRESHOLDS = ("0.3", "0.5")  # the paired-difference table's T(IoU); every threshold is in significance.csv


@dataclass
class Table:
    """One report table: tidy data for CSV, a display frame for LaTeX/Markdown/HTML, and its words."""

    name: str  # file stem under tables/
    title: str
    caption: str
    long: pd.DataFrame
    display: pd.DataFrame  # string cells; index may be a MultiIndex
    bold: pd.DataFrame | None = None  # same shape as display: True where the cell is the column's best
    values: pd.DataFrame | None = None  # same shape as display: the numbers behind the cells (for sorting)
    cell_classes: pd.DataFrame | None = None  # same shape as display: a CSS class per HTML cell ("fail", "gain", ...)
    text_columns: tuple[str, ...] = ()  # columns the HTML sorts by their text, not by a number


def display_label(label: str) -> str:
    """Label-file spelling for column headers (the papers' tables say "Infiltration")."""
    return "Macro" if label == MACRO else box_to_finding(label)


def fmt_cell(v: float, lo: float = math.nan, hi: float = math.nan, sig: bool = False, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{v:.{digits}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return s + (SIG_MARK if sig else "")


def _accuracy_long(rs: RunSet, metric: str, thresholds: tuple[str, ...], sig: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method × label × threshold; with `sig`, the paired test's p-value and mark."""
    rows = []
    for name, m in rs.methods.items():
        for t in thresholds:
            for label in (*BOX_FINDINGS, MACRO):
                lo, hi = sa.ci(m.summary, metric, label, t)
                rows.append(
                    dict(method=name, label=label, threshold=t, value=sa.value(m.summary, metric, label, t), ci_low=lo, ci_high=hi)
                )
    long = pd.DataFrame(rows)
    return _with_marks(long, sig, metric, ALL_BOXES, ["method", "label", "threshold"])


def _with_marks(long: pd.DataFrame, sig: pd.DataFrame | None, metric: str, size_bin: str | None, keys: list[str]) -> pd.DataFrame:
    """`long` with the paired test's p-value and mark of `metric` joined on `keys` (tests of one size bin,
    or of every bin when `size_bin` is None)."""
    if sig is None or sig.empty:
        return long
    s = sig[sig["metric"] == metric]
    if size_bin is not None:
        s = s[s["size_bin"] == size_bin]
    s = s[[*keys, "p_value", "significant"]]
    long = long.merge(s, on=keys, how="left")
    long["significant"] = long["significant"].astype("boolean").fillna(False).astype(bool)
    return long


def _best_mask(values: pd.DataFrame, groups: list | None) -> pd.DataFrame:
    """True at the highest value of each column within each row group (`groups`: one key per row, or
    None for one group); nothing is marked in a column where every method ties."""
    vals = values.astype(float)
    keys = pd.Series(list(groups) if groups is not None else [0] * len(vals), index=range(len(vals)))
    out = np.zeros(vals.shape, dtype=bool)
    for _, idx in keys.groupby(keys, sort=False).groups.items():
        sub = vals.iloc[list(idx)]
        hi, lo = sub.max(axis=0), sub.min(axis=0)
        out[list(idx)] = (sub.eq(hi, axis=1) & sub.notna() & (hi > lo)).to_numpy()
    return pd.DataFrame(out, index=vals.index, columns=vals.columns)


def _wide(
    long: pd.DataFrame,
    row_keys: list[str],
    col_key: str,
    col_order: list,
    row_order: list,
    digits: int = 2,
    ci_columns: set | None = None,
    group_levels: tuple[int, ...] = (0,),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Pivot a long table to display cells; CIs shown only in `ci_columns` (all when None)."""
    sig = long["significant"].fillna(False) if "significant" in long.columns else pd.Series(False, index=long.index)
    show_ci = long[col_key].isin(ci_columns) if ci_columns is not None else pd.Series(True, index=long.index)
    cells = long.assign(
        cell=[
            fmt_cell(v, lo if c else math.nan, hi if c else math.nan, bool(s), digits)
            for v, lo, hi, s, c in zip(long["value"], long["ci_low"], long["ci_high"], sig, show_ci)
        ]
    )
    display = cells.pivot(index=row_keys, columns=col_key, values="cell")
    values = cells.pivot(index=row_keys, columns=col_key, values="value")
    display = display.reindex(index=row_order, columns=col_order)
    values = values.reindex(index=row_order, columns=col_order)
    groups = [tuple(k[i] for i in group_levels) for k in display.index] if len(row_keys) > 1 else None
    return display, _best_mask(values, groups), values


def iou_table(rs: RunSet, sig: pd.DataFrame | None = None) -> Table:
    """IoU accuracy per class × T(IoU) 0.1–0.7 with the macro mean (Li et al. 2018 layout)."""
    long = _accuracy_long(rs, "iou_acc", sa.IOU_THRESHOLDS, sig)
    rows = [(t, m) for t in sa.IOU_THRESHOLDS for m in rs.methods]
    display, bold, values = _wide(long, ["threshold", "method"], "label", [*BOX_FINDINGS, MACRO], rows, ci_columns={MACRO})
    display = display.rename(columns=display_label).rename_axis(index=["T(IoU)", "Method"], columns=None)
    bold.columns = values.columns = display.columns
    return Table(
        "iou_accuracy",
        "IoU accuracy per class",
        "Fraction of ground-truth boxes whose best candidate box has IoU > T(IoU), per class and macro "
        "(mean over classes); 95 % bootstrap CI of the macro in brackets (per-class CIs in the CSV).",
        long,
        display,
        bold,
        values,
    )


def macro_table(rs: RunSet, sig: pd.DataFrame | None = None) -> Table:
    """The headline: macro IoU accuracy at every T(IoU) with its 95 % CI, one row per method."""
    long = _accuracy_long(rs, "iou_acc", sa.IOU_THRESHOLDS, sig)
    long = long[long["label"] == MACRO].reset_index(drop=True)
    display, bold, values = _wide(long, ["method"], "threshold", list(sa.IOU_THRESHOLDS), list(rs.methods))
    display = display.rename(columns=lambda t: f"T(IoU)={t}").rename_axis(index="Method", columns=None)
    bold.columns = values.columns = display.columns
    return Table(
        "macro_iou_accuracy",
        "Macro IoU accuracy (headline)",
        "Mean over the 8 box findings of the fraction of boxes with IoU > T(IoU); 95 % bootstrap CI in brackets.",
        long,
        display,
        bold,
        values,
    )


def iobb_table(rs: RunSet, sig: pd.DataFrame | None = None) -> Table:
    """IoBB accuracy and average false positives per class, in the layout of Wang et al. 2017 Table 4."""
    long = _accuracy_long(rs, "iobb_acc", sa.IOBB_THRESHOLDS, sig)
    long["row"] = "Acc."
    afp_rows = []
    for name, m in rs.methods.items():
        for t in sa.IOBB_THRESHOLDS:
            for label in (*BOX_FINDINGS, MACRO):
                v = sa.value(m.summary, "afp", label, t)
                if math.isnan(v):
                    v = sa.value(m.summary, "afp", label)
                afp_rows.append(dict(method=name, label=label, threshold=t, value=v, ci_low=math.nan, ci_high=math.nan, row="AFP"))
    afp = pd.DataFrame(afp_rows)
    has_afp = afp["value"].notna().any()
    both = pd.concat([long, afp], ignore_index=True) if has_afp else long
    kinds = ("Acc.", "AFP") if has_afp else ("Acc.",)
    rows = [(t, m, k) for t in sa.IOBB_THRESHOLDS for m in rs.methods for k in kinds]
    display, bold, values = _wide(both, ["threshold", "method", "row"], "label", [*BOX_FINDINGS, MACRO], rows, ci_columns={MACRO},
                                  group_levels=(0, 2))
    display = display.rename(columns=display_label).rename_axis(index=["T(IoBB)", "Method", ""], columns=None)
    bold.columns = values.columns = display.columns
    if has_afp:  # fewer false positives is better, and a bold AFP would read as "best accuracy"
        bold.loc[np.asarray(display.index.get_level_values(2) == "AFP")] = False
    return Table(
        "iobb_accuracy",
        "IoBB accuracy (Wang et al. 2017, Table 4 layout)",
        "Acc.: fraction of ground-truth boxes with IoBB (intersection over the predicted box) > T(IoBB)"
        + ("; AFP: average false-positive candidate boxes (IoBB ≤ T with every ground-truth box) per scored "
           "heatmap, as Wang et al. report." if has_afp else "."),
        both,
        display,
        bold,
        values,
    )


def size_table(rs: RunSet, sig: pd.DataFrame | None = None) -> Table:
    """Macro IoU accuracy per ground-truth box size bin (small/medium/large area fraction); with `sig`,
    the paired test against the reference within each bin marks the cell."""
    rows = []
    for name, m in rs.methods.items():
        for b in sa.size_bins(m.summary):
            for t in sa.IOU_THRESHOLDS:
                v, lo, hi = sa.by_size(m.summary, b, "iou_acc", MACRO, t)
                n = int((m.summary["by_size"][b] or {}).get("n_boxes", (m.per_box["size_bin"].astype(str) == b).sum()))
                rows.append(dict(method=name, size_bin=b, label=MACRO, threshold=t, value=v, ci_low=lo, ci_high=hi, n_boxes=n))
    long = pd.DataFrame(rows, columns=["method", "size_bin", "label", "threshold", "value", "ci_low", "ci_high", "n_boxes"])
    long = _with_marks(long, sig, "iou_acc", None, ["method", "size_bin", "label", "threshold"])
    bins = list(dict.fromkeys(long["size_bin"])) if len(long) else []
    rows_order = [(t, m) for t in sa.IOU_THRESHOLDS for m in rs.methods]
    display, bold, values = _wide(long, ["threshold", "method"], "size_bin", bins, rows_order)
    counts = long.drop_duplicates("size_bin").set_index("size_bin")["n_boxes"] if len(long) else {}
    display = display.rename(columns=lambda b: f"{b} (n={counts[b]})").rename_axis(index=["T(IoU)", "Method"], columns=None)
    bold.columns = values.columns = display.columns
    return Table(
        "size_bins",
        "IoU accuracy by box size",
        "Macro IoU accuracy per ground-truth box size (box area as a fraction of the image)"
        + ("; * the paired patient-bootstrap test against the reference within the bin, p < 0.05." if "significant" in long else "."),
        long,
        display,
        bold,
        values,
    )


def auroc_table(rs: RunSet) -> Table | None:
    """Classification AUROC per finding (14) and their mean; None when no method has AUROCs."""
    rows = []
    for name, m in rs.methods.items():
        auroc = m.summary.get("auroc") or {}
        per_class, cis = auroc.get("per_class") or {}, auroc.get("ci") or {}
        for label in (*FINDINGS, "mean"):
            v = auroc.get("mean") if label == "mean" else per_class.get(label)
            lo, hi = sa.pair(cis.get(label))
            rows.append(dict(method=name, label=label, threshold="", value=sa.num(v), ci_low=lo, ci_high=hi))
    long = pd.DataFrame(rows)
    if long["value"].isna().all():
        return None
    display, bold, values = _wide(long, ["method"], "label", [*FINDINGS, "mean"], list(rs.methods), digits=3, ci_columns={"mean"})
    display = display.rename(columns=lambda c: "Mean" if c == "mean" else c.replace("_", " ")).rename_axis(index="Method", columns=None)
    bold.columns = values.columns = display.columns
    return Table(
        "auroc",
        "Classification AUROC",
        "Area under the ROC curve per finding on the test split (findings with both classes present), and their mean "
        "with its 95 % bootstrap CI (per-finding CIs in the CSV).",
        long,
        display,
        bold,
        values,
    )


def auroc_box_table(rs: RunSet, zero_shot: list[str] | None = None) -> Table | None:
    """AUROC of the 8 box findings with each one's 95 % CI in every cell (the scorer's patient-bootstrap
    CIs, `wsl_bench.metrics.classification.auroc_summary`); None when no method has a box-finding AUROC.
    `zero_shot` names the methods whose probabilities are zero-shot scores (said in the caption)."""
    rows = []
    for name, m in rs.methods.items():
        auroc = m.summary.get("auroc") or {}
        per_class, cis = auroc.get("per_class") or {}, auroc.get("ci") or {}
        for label in BOX_FINDINGS:
            finding = box_to_finding(label)
            lo, hi = sa.pair(cis.get(finding))
            rows.append(dict(method=name, label=finding, threshold="", value=sa.num(per_class.get(finding)),
                             ci_low=lo, ci_high=hi, n_images=auroc.get("n_images")))
    long = pd.DataFrame(rows)
    if not len(long) or long["value"].isna().all():
        return None
    findings = [box_to_finding(b) for b in BOX_FINDINGS]
    display, bold, values = _wide(long, ["method"], "label", findings, list(rs.methods), digits=2)
    display = display.rename_axis(index="Method", columns=None)
    no_ci = sorted(set(long.loc[long["value"].notna() & long["ci_low"].isna(), "method"]))
    zs = [n for n in (zero_shot or []) if n in rs.methods]
    return Table(
        "auroc_box_findings",
        "Classification AUROC per box finding, with 95 % CIs",
        "AUROC of the method's image-level probabilities for each of the 8 findings with boxes, on the test split, "
        "with the scorer's 95 % patient-bootstrap CI (same replicates for every finding)"
        + (f"; {', '.join(zs)}: zero-shot (prompt scores, no classifier trained on the labels)" if zs else "")
        + (f"; no CI recorded for {', '.join(no_ci)}" if no_ci else "") + ".",
        long,
        display,
        bold,
        values,
    )


def other_metrics() -> list[tuple[str, str]]:
    """(summary key, title) of every registered metric whose summary entry is one value per class and
    macro (pointing, mIoU, CNR, mean best IoU, PxAP, and any metric registered since), in registry order."""
    from wsl_bench.metrics.registry import available_metrics

    return [(m.summary_keys[0], m.title) for m in available_metrics().values() if m.kind == "per_class"]


def other_metrics_table(rs: RunSet) -> Table | None:
    """Macro pointing game, mIoU (AFLoc / cheXlocalize style), CNR, mean best IoU and PxAP with CIs:
    the scorer's other views of the same maps, for comparing with tools that report those."""
    listed = other_metrics()
    rows = []
    for name, m in rs.methods.items():
        for key, _ in listed:
            lo, hi = sa.ci(m.summary, key, MACRO)
            rows.append(dict(method=name, label=key, threshold="", value=sa.value(m.summary, key, MACRO), ci_low=lo, ci_high=hi))
    long = pd.DataFrame(rows)
    present = [k for k, _ in listed if long.loc[long["label"] == k, "value"].notna().any()]
    if not present:
        return None
    long = long[long["label"].isin(present)].reset_index(drop=True)
    display, bold, values = _wide(long, ["method"], "label", present, list(rs.methods))
    titles = dict(listed)
    display = display.rename(columns=titles).rename_axis(index="Method", columns=None)
    bold.columns = values.columns = display.columns
    return Table(
        "other_metrics",
        "Pointing game, mIoU, CNR",
        "Macro over classes: pointing game (heatmap maximum inside the box), mIoU of the thresholded map against the box "
        "mask averaged over thresholds, contrast-to-noise ratio, mean best IoU, and PxAP where pixel masks exist; "
        "95 % bootstrap CI in brackets.",
        long,
        display,
        bold,
        values,
    )


def policy_tables(rs: RunSet) -> list[Table]:
    """What each run's box policy chose, one table per policy that declares one (`Policy.report_table`,
    e.g. calibrated τ per class frozen on the calibration half, and the MaxBoxAccV2 oracle numbers, an
    upper bound, never a headline), in registry order. A policy not registered here is skipped."""
    from wsl_bench.localize import get_policy, policy_names

    by_policy: dict[str, list[tuple[dict, str]]] = {}
    for name, m in rs.methods.items():
        pname = str(m.summary.get("policy"))
        if pname not in policy_names():
            continue
        for c in get_policy(pname).chosen(m.summary):
            row = dict(method=name, label=c.label, threshold="", value=c.value, ci_low=math.nan, ci_high=math.nan,
                       **c.extra)
            by_policy.setdefault(pname, []).append((row, c.note))
    out = []
    for pname in policy_names():
        spec = get_policy(pname).report_table
        if spec is None or not by_policy.get(pname):
            continue
        long = pd.DataFrame([row for row, _ in by_policy[pname]])
        methods = list(dict.fromkeys(long["method"]))
        columns = [*BOX_FINDINGS, MACRO] if spec.macro else list(BOX_FINDINGS)
        display, bold, values = _wide(long, ["method"], "label", columns, methods)
        notes = pd.DataFrame([(row["method"], row["label"], note) for row, note in by_policy[pname]],
                             columns=["method", "label", "note"])
        notes = notes.drop_duplicates(["method", "label"]).pivot(index="method", columns="label", values="note")
        notes = notes.reindex(index=methods, columns=columns).fillna("")
        display = display.where(display == "–", display + notes)
        display = display.rename(columns=display_label).rename_axis(index="Method", columns=None)
        values.columns = display.columns
        if spec.bold:
            bold.columns = display.columns
        out.append(Table(spec.name, spec.title, spec.caption, long, display, bold if spec.bold else None, values))
    return out


RUNTIME_FIELDS = (
    ("n_params", "Parameters", lambda v: f"{v / 1e6:.2f} M" if v >= 1e4 else f"{int(v)}"),
    ("fit_s", "Fit (s)", lambda v: f"{v:.1f}"),
    ("explain_s", "Explain (s)", lambda v: f"{v:.1f}"),
    ("heatmaps_per_s", "Heatmaps / s", lambda v: f"{v:.1f}"),
)


def _fmt_p(p: float, n_boot: int | None) -> str:
    if math.isnan(p):
        return "p –"
    return f"p < {1 / n_boot:.3g}" if p == 0 and n_boot else f"p = {p:.3f}"


def paired_table(rs: RunSet, sig: pd.DataFrame | None) -> Table | None:
    """Each method minus the reference in macro IoU accuracy at T(IoU) 0.3 and 0.5, over all boxes and
    per size bin: the paired patient-bootstrap difference, its 95 % CI and p-value (None without tests)."""
    if sig is None or sig.empty:
        return None
    long = sig[(sig["metric"] == "iou_acc") & (sig["label"] == MACRO) & sig["threshold"].isin(PAIRED_THRESHOLDS)].copy()
    if long.empty:
        return None
    reference = str(long["reference"].iloc[0])
    n_boot = int(rs.methods[reference].summary.get("bootstrap", {}).get("n_boot", 0) or 0) or None
    bins = [ALL_BOXES, *[b for b in dict.fromkeys(long["size_bin"]) if b != ALL_BOXES]]
    cols = [f"T(IoU) {t} · {b}" for t in PAIRED_THRESHOLDS for b in bins]
    long["column"] = [f"T(IoU) {t} · {b}" for t, b in zip(long["threshold"], long["size_bin"])]
    from wsl_bench.report.sanity import fmt_gain  # the sanity section's difference-with-CI format (it imports us)

    long["cell"] = [f"{fmt_gain(d, lo, hi)} {_fmt_p(p, n_boot)}" + (SIG_MARK if s else "")
                    for d, lo, hi, p, s in zip(long["diff"], long["ci_low"], long["ci_high"], long["p_value"], long["significant"])]
    methods = [m for m in rs.methods if m in set(long["method"])]
    display = long.pivot(index="method", columns="column", values="cell").reindex(index=methods, columns=cols).fillna("–")
    values = long.pivot(index="method", columns="column", values="diff").reindex(index=methods, columns=cols)
    display = display.rename_axis(index="Method", columns=None)
    values.index, values.columns = display.index, display.columns
    return Table(
        "paired_differences",
        f"Paired differences against {reference}",
        f"Each method's macro IoU accuracy minus {reference}'s on the same boxes, at T(IoU) "
        + " and ".join(PAIRED_THRESHOLDS) + ", over all boxes and within each box-size bin: the difference, "
        "its paired patient-bootstrap 95 % CI and two-sided p-value (* p < 0.05). Every threshold is in "
        "`tables/significance.csv`.",
        long.drop(columns=["column", "cell"]),
        display,
        None,  # differences against the reference: no "best" to mark
        values,
    )


def runtime_table(rs: RunSet) -> Table:
    """Parameters, training and explanation time, and heatmap throughput from the manifests."""
    rows = []
    for name, m in rs.methods.items():
        row = {"method": name}
        for key, _, _ in RUNTIME_FIELDS:
            try:
                row[key] = float(m.timings.get(key))
            except (TypeError, ValueError):
                row[key] = math.nan
        rows.append(row)
    long = pd.DataFrame(rows, columns=["method", *(k for k, _, _ in RUNTIME_FIELDS)])
    long["device"] = [str(m.timings.get("device", "") or "") for m in rs.methods.values()]
    display = pd.DataFrame(
        {title: [("–" if math.isnan(v) else f(v)) for v in long[key]] for key, title, f in RUNTIME_FIELDS},
        index=pd.Index(long["method"], name="Method"),
    )
    values = long.set_index("method")[[k for k, _, _ in RUNTIME_FIELDS]]
    hw = set(long["device"]) - {""}
    return Table(
        "runtime",
        "Runtime and size",
        "Trainable parameters, wall-clock fit and explanation time, and heatmaps per second"
        + (f" on {', '.join(sorted(hw))}" if hw else "")
        + " (from the run manifest).",
        long,
        display,
        None,
        values,
    )


# -- writers ---------------------------------------------------------------------------------


def to_markdown(display: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    """A GitHub-flavoured Markdown table; index levels become leading columns, bold marks the best."""
    idx_names = [n or "" for n in display.index.names]
    header = [*idx_names, *map(str, display.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(idx_names) + ["---:"] * len(display.columns)) + "|"]
    prev: tuple = ()
    for i, (key, row) in enumerate(display.iterrows()):
        key = key if isinstance(key, tuple) else (key,)
        shown = [("" if prev[: j + 1] == key[: j + 1] else str(k)) for j, k in enumerate(key)] if len(key) > 1 else [str(key[0])]
        prev = key
        cells = []
        for j, c in enumerate(row):
            c = str(c).replace("|", "\\|")
            mark = c.endswith(SIG_MARK)
            c = c[: -len(SIG_MARK)] if mark else c
            if bold is not None and bool(bold.iat[i, j]) and c != "–":
                c = f"**{c}**"
            cells.append(c + ("\\" + SIG_MARK if mark else ""))
        lines.append("| " + " | ".join([*shown, *cells]) + " |")
    return "\n".join(lines) + "\n"


_LATEX = (
    ("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"), ("–", "--"),
    (">", r"$>$"), ("<", r"$<$"), ("≤", r"$\le$"), ("≥", r"$\ge$"), ("±", r"$\pm$"), ("τ", r"$\tau$"), ("†", r"\dag{}"),
    ("×", r"$\times$"), ("−", r"$-$"),
)


def _latex_escape(s: str) -> str:
    """Plain text to LaTeX text mode (pdflatex-safe: no raw <, >, τ or † that the OT1 font mangles)."""
    for a, b in _LATEX:
        s = s.replace(a, b)
    return s


def to_latex(table: Table) -> str:
    """A booktabs table (\\toprule/\\midrule/\\bottomrule) with the best value per column in bold."""
    disp = table.display.copy()
    marked = disp.map(lambda c: str(c).endswith(SIG_MARK)).to_numpy(dtype=bool)
    disp = disp.map(lambda c: _latex_escape(str(c).removesuffix(SIG_MARK)))
    if table.bold is not None:
        disp = disp.where(~table.bold.to_numpy(dtype=bool), disp.map(lambda c: r"\textbf{" + c + "}"))
    disp = disp.where(~marked, disp.map(lambda c: c + r"$^{*}$"))
    disp.columns = [_latex_escape(str(c)) for c in disp.columns]
    disp.index = disp.index.set_names([_latex_escape(str(n)) if n else None for n in disp.index.names])
    if isinstance(disp.index, pd.MultiIndex):
        disp.index = pd.MultiIndex.from_tuples([tuple(_latex_escape(str(k)) for k in key) for key in disp.index], names=disp.index.names)
    else:
        disp.index = pd.Index([_latex_escape(str(k)) for k in disp.index], name=disp.index.name)
    body = disp.style.to_latex(
        hrules=True,
        column_format="l" * disp.index.nlevels + "r" * disp.shape[1],
        multirow_align="t",
        clines="skip-last;data" if isinstance(disp.index, pd.MultiIndex) else None,
        caption=_latex_escape(table.caption),
        label=f"tab:{table.name}",
        position="t",
        environment="table*",
    )
    body = body.replace("\\cline{", "\\cmidrule(l){")  # booktabs rules, not \cline
    return "% Needs \\usepackage{booktabs,multirow}. Generated by wsl-bench report.\n" + body


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """Write tables/<name>.csv (tidy) and tables/<name>.tex (booktabs); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, tex_path = out_dir / f"{table.name}.csv", out_dir / f"{table.name}.tex"
    with atomic_path(csv_path) as tmp:
        table.long.to_csv(tmp, index=False, float_format="%.10g")
    write_text(tex_path, to_latex(table))
    return {"csv": csv_path, "tex": tex_path}
