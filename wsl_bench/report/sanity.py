"""The report's first section: does each method localize beyond a guess?

Read from each method's ``summary.json["sanity"]`` (written by the scorer; nothing is recomputed here):
the gain over the best image-independent guess with its paired CI, the right-class rate, the correlation
of an image's class maps, the model-randomisation correlation and the correlation with the priors. Each
method gets a plain verdict from the rules in `VERDICT_RULES`; a check whose inputs are missing is
"not computed", never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.metrics.aggregate import SIZE_BINS as METRIC_SIZE_BINS
from wsl_bench.references import CEILING_REFERENCES as CEILING_METHODS  # the supervised ceiling
from wsl_bench.references import GUESS_REFERENCES
from wsl_bench.report import summary_access as sa
from wsl_bench.report.runs import MethodScores, RunSet
from wsl_bench.report.tables import MACRO, SIG_MARK, Table, display_label

SANITY_T = "0.3"  # the T(IoU) the section reads accuracy and gains at
CHANCE = 1.0 / len(BOX_FINDINGS)
RANDOMISATION_MAX = 0.5  # CI low above this: the map barely changes when the weights are re-initialised
CLASS_CORRELATION_MAX = 0.9  # mean class-map correlation at or above this: nearly one map for every class
PRIOR_MAX = 0.8  # a correlation with a prior at or above this: the map draws the prior
SIGNIFICANCE = 0.05

SECTION_TITLE = "Does each method localize beyond a guess?"
SIZE_BINS = tuple(name for name, _, _ in METRIC_SIZE_BINS)  # the scorer's bins, smallest first

# The checks, in the order a verdict lists them: (failure words, name when not computed).
CHECK_NAMES = {
    "randomisation": "ignores the model",
    "gain": "below a guess / no better than a guess",
    "class": "not class-specific",
    "prior": "draws a prior",
}

VERDICT_RULES: tuple[str, ...] = (
    "A guess (`prior-center`, `prior-lung`, `random`) reads **reference (guess)** and the supervised ceiling "
    "(`oracle-seg`) **reference (ceiling)**; every other method lists each check it fails, joined by \"; \", "
    "or reads **localizes** when every check was computed and none fails.",
    f"**ignores the model**: the randomisation correlation (its maps against those of the fully re-initialised "
    f"network, the \"all\" depth) has a 95 % CI whose low end is above {RANDOMISATION_MAX:g}.",
    f"**below a guess**: the macro gain over the best guess at T(IoU) {SANITY_T} has a CI whose high end is below 0.",
    f"**no better than a guess**: that CI contains 0.",
    f"**not class-specific**: the right-class rate's CI low end is at or below chance (1/{len(BOX_FINDINGS)}), "
    f"or the mean correlation of an image's class maps is {CLASS_CORRELATION_MAX:g} or more.",
    f"**draws a prior**: the highest correlation with an image-independent prior is {PRIOR_MAX:g} or more.",
    "**not computed: …** names each check whose inputs the scores lack (for example no randomisation run, or "
    "no guess scored beside the method); such a check is never counted as passed, so such a method never "
    "reads \"localizes\".",
)


def _num(x: Any) -> float:
    return sa.num(x)


def _ci(node: Any) -> tuple[float, float]:
    if isinstance(node, dict) and "ci" in node:
        return sa.pair(node["ci"])
    return sa.pair(node)


def _finite(*xs: float) -> bool:
    return all(not math.isnan(x) for x in xs)


def _same_t(a: Any, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return str(a) == b


def role_of(m: MethodScores) -> str:
    """'guess', 'ceiling' or 'method': the scorer's `sanity.role`, else by the method's registered name."""
    role = (m.summary.get("sanity") or {}).get("role") if isinstance(m.summary.get("sanity"), dict) else None
    if role in ("guess", "ceiling", "method"):
        return role
    return "guess" if m.method in GUESS_REFERENCES else "ceiling" if m.method in CEILING_METHODS else "method"


@dataclass
class Assessment:
    """One method's sanity numbers (NaN when absent), failed checks and checks not computed."""

    role: str
    accuracy: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    gain: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    gain_p: float = math.nan
    gain_reference: str = ""
    right_class: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    chance: float = CHANCE
    class_correlation: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    randomisation: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    randomisation_reason: str = ""
    floor_share: float = 0.0  # largest share of cells the correlations left out as imposed (the shared floor)
    prior: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    prior_name: str = ""
    failed: list[str] = field(default_factory=list)
    not_computed: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.role == "guess":
            return "reference (guess)"
        if self.role == "ceiling":
            return "reference (ceiling)"
        parts = list(self.failed)
        if self.not_computed:
            parts.append("not computed: " + ", ".join(self.not_computed))
        if not self.failed and not self.not_computed:
            return "localizes"
        return "; ".join(parts)

    @property
    def fails(self) -> bool:
        """True when the method fails at least one check (references never do)."""
        return self.role == "method" and bool(self.failed)


def macro_gain_row(sanity: dict, t: str = SANITY_T) -> dict | None:
    """The `gain_over_guess` row of scope "macro" at T(IoU) `t`, None when absent."""
    gog = sanity.get("gain_over_guess")
    if not isinstance(gog, dict):
        return None
    for row in gog.get("rows") or []:
        if isinstance(row, dict) and row.get("scope") == "macro" and _same_t(row.get("threshold"), t):
            return row
    return None


def assess(m: MethodScores) -> Assessment:
    """Read one method's sanity block and apply the verdict rules (`VERDICT_RULES`)."""
    s = m.summary.get("sanity")
    s = s if isinstance(s, dict) else {}
    a = Assessment(role=role_of(m))
    a.accuracy = (sa.value(m.summary, "iou_acc", MACRO, SANITY_T), *sa.ci(m.summary, "iou_acc", MACRO, SANITY_T))

    # randomisation: the fully re-initialised network ("all", else the deepest listed)
    rnd = s.get("randomization")
    if isinstance(rnd, dict) and rnd.get("status") == "computed" and rnd.get("depths"):
        depths = [d for d in rnd["depths"] if isinstance(d, dict)]
        full = next((d for d in depths if d.get("name") == "all"), depths[-1] if depths else None)
        if full is not None:
            a.randomisation = (_num(full.get("mean")), *_ci(full))
            if _finite(_num(full.get("floor_share"))):
                a.floor_share = max(a.floor_share, _num(full.get("floor_share")))
    elif isinstance(rnd, dict):
        a.randomisation_reason = str(rnd.get("reason") or "")
    r_mean, r_lo, _ = a.randomisation
    if not _finite(r_lo):
        a.not_computed.append("randomisation")
    elif r_lo > RANDOMISATION_MAX:
        a.failed.append("ignores the model")

    # gain over the best guess, macro, at T(IoU) 0.3
    row = macro_gain_row(s)
    if row is not None:
        a.gain = (_num(row.get("diff")), *_ci(row))
        a.gain_p = _num(row.get("p_value"))
        a.gain_reference = str(row.get("best_reference") or "")
    _, g_lo, g_hi = a.gain
    if not _finite(g_lo, g_hi):
        a.not_computed.append("gain over a guess")
    elif g_hi < 0:
        a.failed.append("below a guess")
    elif g_lo <= 0 <= g_hi:
        a.failed.append("no better than a guess")

    # class specificity: right-class rate and class-map correlation
    cs = s.get("class_specificity")
    cs = cs if isinstance(cs, dict) else {}
    rcr = cs.get("right_class_rate") if isinstance(cs.get("right_class_rate"), dict) else {}
    if _finite(_num(rcr.get("chance"))):
        a.chance = _num(rcr.get("chance"))
    macro = rcr.get("macro") if isinstance(rcr.get("macro"), dict) else {}
    a.right_class = (_num(macro.get("rate")), *_ci(macro))
    cc = cs.get("class_correlation") if isinstance(cs.get("class_correlation"), dict) else {}
    a.class_correlation = (_num(cc.get("mean")), *_ci(cc))
    if _finite(_num(cc.get("floor_share"))):
        a.floor_share = max(a.floor_share, _num(cc.get("floor_share")))
    rc_lo, corr = a.right_class[1], a.class_correlation[0]
    fails_rate = _finite(rc_lo) and rc_lo <= a.chance + 1e-12
    fails_corr = _finite(corr) and corr >= CLASS_CORRELATION_MAX
    if fails_rate or fails_corr:
        a.failed.append("not class-specific")
    elif not _finite(rc_lo, corr):  # one input passes, the other is missing: no pass
        a.not_computed.append("class specificity")

    # the highest correlation with a prior
    priors = s.get("prior_correlation")
    best = None
    if isinstance(priors, dict):
        for name, node in priors.items():
            v = _num(node.get("mean") if isinstance(node, dict) else node)
            if _finite(v) and (best is None or v > best[1]):
                best = (name, v, *(_ci(node) if isinstance(node, dict) else (math.nan, math.nan)))
    if best is None:
        a.not_computed.append("prior correlation")
    else:
        a.prior_name, a.prior = best[0], (best[1], best[2], best[3])
        if best[1] >= PRIOR_MAX:
            a.failed.append("draws a prior")
    return a


def has_sanity(rs: RunSet) -> bool:
    """True when at least one method's summary carries a sanity block."""
    return any(isinstance(m.summary.get("sanity"), dict) for m in rs.methods.values())


def assessments(rs: RunSet) -> dict[str, Assessment]:
    return {n: assess(m) for n, m in rs.methods.items()}


def _signed(v: float, digits: int = 2) -> str:
    return f"{v:+.{digits}f}"


def fmt_gain(v: float, lo: float, hi: float, p: float = math.nan) -> str:
    """"+0.05 [+0.01, +0.09]*": a difference with its CI, `*` when p < 0.05."""
    if math.isnan(v):
        return "–"
    s = _signed(v)
    if _finite(lo, hi):
        s += f" [{_signed(lo)}, {_signed(hi)}]"
    return s + (SIG_MARK if _finite(p) and p < SIGNIFICANCE else "")


def _fmt(v: float, lo: float = math.nan, hi: float = math.nan) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if _finite(lo, hi) else "")


SANITY_COLUMNS = (
    ("accuracy", f"Acc. T(IoU)={SANITY_T}"),
    ("gain", "Gain over best guess"),
    ("right_class", "Right-class rate"),
    ("class_correlation", "Class-map corr."),
    ("randomisation", "Randomisation corr."),
    ("prior", "Max prior corr."),
    ("verdict", "Verdict"),
)


def sanity_table(rs: RunSet, found: dict[str, Assessment] | None = None) -> Table | None:
    """One row per method: headline accuracy, gain over the best guess, the class-specificity numbers,
    the randomisation and prior correlations, and the verdict; None when no summary has sanity data."""
    if not has_sanity(rs):
        return None
    found = found or assessments(rs)
    rows, disp, vals, classes = [], {}, {}, {}
    for name, a in found.items():
        cells = {
            "accuracy": (_fmt(*a.accuracy), a.accuracy[0]),
            "gain": ((f"{a.gain_reference}: " if a.gain_reference and _finite(a.gain[0]) else "") + fmt_gain(*a.gain, a.gain_p),
                     a.gain[0]),
            "right_class": (_fmt(*a.right_class), a.right_class[0]),
            "class_correlation": (_fmt(a.class_correlation[0]), a.class_correlation[0]),
            "randomisation": (_fmt(*a.randomisation), a.randomisation[0]),
            "prior": (_fmt(a.prior[0]) + (f" ({a.prior_name})" if a.prior_name else ""), a.prior[0]),
            "verdict": (a.verdict, math.nan),
        }
        disp[name] = {title: cells[k][0] for k, title in SANITY_COLUMNS}
        vals[name] = {title: cells[k][1] for k, title in SANITY_COLUMNS}
        classes[name] = {title: "" for _, title in SANITY_COLUMNS}
        classes[name]["Verdict"] = "fail" if a.fails else ("ref" if a.role != "method" else "nc" if a.not_computed else "pass")
        common = dict(method=name, role=a.role, threshold=SANITY_T, verdict=a.verdict, failed="; ".join(a.failed),
                      not_computed=", ".join(a.not_computed))
        for key, (v, lo, hi), p, detail in (
            ("iou_acc", a.accuracy, math.nan, ""),
            ("gain_over_guess", a.gain, a.gain_p, a.gain_reference),
            ("right_class_rate", a.right_class, math.nan, f"chance {a.chance:g}"),
            ("class_correlation", a.class_correlation, math.nan, ""),
            ("randomisation_correlation", a.randomisation, math.nan, a.randomisation_reason),
            ("prior_correlation_max", a.prior, math.nan, a.prior_name),
        ):
            rows.append(dict(common, label=key, value=v, ci_low=lo, ci_high=hi, p_value=p, detail=detail))
    long = pd.DataFrame(rows, columns=["method", "role", "label", "threshold", "value", "ci_low", "ci_high", "p_value",
                                       "detail", "verdict", "failed", "not_computed"])
    index = pd.Index(list(found), name="Method")
    display = pd.DataFrame.from_dict(disp, orient="index").reindex(index)
    values = pd.DataFrame.from_dict(vals, orient="index").reindex(index).astype(float)
    cell_classes = pd.DataFrame.from_dict(classes, orient="index").reindex(index)
    return Table(
        "sanity",
        SECTION_TITLE,
        f"Per method: macro IoU accuracy at T(IoU) {SANITY_T}; its gain over the best guess (the best of the "
        "image-independent references, chosen per cell) with the paired patient-bootstrap 95 % CI "
        f"({SIG_MARK} p < 0.05); the right-class rate (a box's own class map puts the most mass in it; chance "
        f"1/{len(BOX_FINDINGS)}); the mean rank correlation of an image's class maps (1 = the same map for every "
        "class); the rank correlation of its maps with those of the fully re-initialised network (model "
        "randomisation, Adebayo et al. 2018); its highest rank correlation with a prior; and the verdict.",
        long,
        display,
        None,
        values,
        cell_classes=cell_classes,
        text_columns=("Verdict",),
    )


def gain_cells_table(rs: RunSet, t: str = SANITY_T) -> Table | None:
    """Methods × (macro, each class, each size bin): gain over the best guess at T(IoU) `t` with its CI,
    marked when p < 0.05; every threshold of the scorer's rows goes to the CSV. None without rows."""
    rows = []
    for name, m in rs.methods.items():
        s = m.summary.get("sanity")
        gog = s.get("gain_over_guess") if isinstance(s, dict) else None
        for r in (gog.get("rows") or []) if isinstance(gog, dict) else []:
            if not isinstance(r, dict):
                continue
            lo, hi = _ci(r)
            p = _num(r.get("p_value"))
            rows.append(dict(method=name, scope=r.get("scope"), label=str(r.get("label")), threshold=str(r.get("threshold")),
                             value=_num(r.get("diff")), ci_low=lo, ci_high=hi, p_value=p,
                             significant=bool(_finite(p) and p < SIGNIFICANCE), best_reference=r.get("best_reference"),
                             method_accuracy=_num(r.get("method")), reference_accuracy=_num(r.get("reference")),
                             n_boxes=r.get("n_boxes")))
    if not rows:
        return None
    long = pd.DataFrame(rows)
    at = long[[_same_t(x, t) for x in long["threshold"]]]
    present = set(zip(at["scope"], at["label"]))
    cols = [("macro", "macro")] + [("class", lb) for lb in BOX_FINDINGS if ("class", lb) in present]
    cols += [("size_bin", b) for b in SIZE_BINS if ("size_bin", b) in present]
    cols += sorted(k for k in present if k not in set(cols))
    titles = [("Macro" if s == "macro" else display_label(lb) if s == "class" else f"{lb} boxes") for s, lb in cols]
    methods = [n for n in rs.methods if n in set(at["method"])]
    index = pd.Index(methods, name="Method")
    display = pd.DataFrame("–", index=index, columns=titles)
    values = pd.DataFrame(math.nan, index=index, columns=titles)
    classes = pd.DataFrame("", index=index, columns=titles)
    for r in at.itertuples():
        if (r.scope, r.label) not in cols:
            continue
        col = titles[cols.index((r.scope, r.label))]
        display.loc[r.method, col] = fmt_gain(r.value, r.ci_low, r.ci_high, r.p_value)
        values.loc[r.method, col] = r.value
        if _finite(r.ci_low) and r.ci_low > 0:
            classes.loc[r.method, col] = "gain"
        elif _finite(r.ci_high) and r.ci_high < 0:
            classes.loc[r.method, col] = "loss"
    return Table(
        "sanity_gain_cells",
        f"Where each method beats the best guess (T(IoU) = {t})",
        f"IoU accuracy at T(IoU) {t} minus that of the best guess in the same cell (macro, each class, each box-size "
        f"bin), with the paired patient-bootstrap 95 % CI; {SIG_MARK} p < 0.05. Positive: the method beats every "
        "guess there. Every threshold, the reference chosen and both accuracies are in the CSV.",
        long,
        display,
        None,
        values,
        cell_classes=classes,
    )


@dataclass
class SanitySection:
    """The report's first section: its tables (empty when no summary has sanity data) and its words."""

    title: str
    tables: list[Table]
    rules: tuple[str, ...]
    notes: list[str]
    verdicts: dict[str, Assessment]


def build_section(rs: RunSet) -> SanitySection:
    """Both sanity tables and the notes on what was not computed."""
    found = assessments(rs)
    notes = []
    if not has_sanity(rs):
        notes.append("Not computed: no `summary.json` of these runs carries the sanity instruments (they were scored "
                     "before the scorer wrote them); re-run `wsl-bench run` on the run folder to score them.")
        return SanitySection(SECTION_TITLE, [], VERDICT_RULES, notes, found)
    missing = [n for n, m in rs.methods.items() if not isinstance(m.summary.get("sanity"), dict)]
    if missing:
        notes.append("No sanity instruments in the scores of: " + ", ".join(f"`{n}`" for n in missing)
                     + " (every check reads \"not computed\").")
    reasons = sorted({f"`{n}`: {a.randomisation_reason}" for n, a in found.items()
                      if a.role == "method" and a.randomisation_reason and "randomisation" in a.not_computed})
    if reasons:
        notes.append("Model randomisation skipped for " + "; ".join(reasons) + ".")
    floors = [f"`{n}` {a.floor_share:.0%}" for n, a in found.items() if a.role != "guess" and a.floor_share >= 0.005]
    if floors:
        notes.append("The class-map and randomisation correlations leave out the cells that every map of every image "
                     "holds at its minimum (structure a method imposes, such as a border margin; docs/scoring.md). "
                     "Cells left out: " + ", ".join(floors) + ".")
    tables = [t for t in (sanity_table(rs, found), gain_cells_table(rs)) if t is not None]
    return SanitySection(SECTION_TITLE, tables, VERDICT_RULES, notes, found)
