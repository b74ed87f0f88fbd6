"""The section "Rankings across seeds": the same benchmark run with several seeds.

Given run folders that differ only in their seed (and possibly in which methods they ran), the section
reads each method's numbers from every run's ``summary.json`` (nothing is rescored) and shows, per method,
the mean and the spread over seeds (sample SD, min, max, number of seeds) of macro IoU accuracy at
T(IoU) 0.1/0.3/0.5 and per box-size bin at 0.3, of the gain over the best guess and the right-class rate
at 0.3 (``summary["sanity"]``), and of the mean AUROC; then each seed's ranking of the methods by macro
IoU accuracy at T(IoU) 0.3, and Kendall's tau-b between every two seeds over the methods both ran. For every two methods whose
order reverses between two seeds, a paired patient bootstrap of their difference within each seed (on that
seed's boxes, from the runs' per-box tables) tells a reversal the seeds agree on from a tie within noise.

Which runs qualify (`compare_runs`): at least two runs, each with its seed and its config.yaml, no seed
twice, and the same settings in every config section that enters the run's config hash except the seed
(`COMPARED_SECTIONS`; of ``methods``, the settings of the methods two runs share). Otherwise the report
is written as without this module, with a note saying why the section was left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from wsl_bench.report import summary_access as sa
from wsl_bench.report.runs import RunSet
from wsl_bench.report.sanity import SANITY_T, SIZE_BINS, macro_gain_row, role_of
from wsl_bench.report.tables import MACRO, Table, _best_mask

SECTION_TITLE = "Rankings across seeds"
RANK_T = "0.3"  # the T(IoU) whose macro accuracy ranks the methods
ACC_THRESHOLDS = ("0.1", "0.3", "0.5")
SIZE_T = "0.3"
TAU_HOLDS = 0.7  # the ranking holds when every pair of seeds has tau-b at or above this
MIN_RANKED = 3  # ... over at least this many shared methods (with 2, tau-b is always +1 or -1)

# config.yaml sections compared between runs: those of the run's config hash (wsl_bench.config.HASHED_SECTIONS
# and the optional test_data) except the seed; of "methods", only the methods both runs ran.
COMPARED_SECTIONS = ("preset", "data", "test_data", "fit", "explain", "score")
# Where the data files are and how they are cached: not a setting of the experiment.
IGNORED_KEYS = ("data.root", "data.cache", "data.cache_dir", "data.preload")

ROLE_TEXT = {"guess": "reference (guess)", "ceiling": "reference (ceiling)", "method": "method"}

RULES: tuple[str, ...] = (
    f"Methods are ranked in each seed by macro IoU accuracy at T(IoU) {RANK_T} (rank 1 = highest; tied "
    "accuracies share the best rank). The references (the guesses `prior-center`, `prior-lung`, `random` and "
    "the ceiling `oracle-seg`) are shown for scale but neither ranked nor counted in τ-b; the CSV also gives "
    "τ-b with them.",
    "Kendall's τ-b (ties handled; `scipy.stats.kendalltau`) compares two seeds' accuracies over the methods "
    "both seeds scored, with its two-sided p-value (exact for up to 33 methods without ties, else the normal "
    "approximation).",
    f"**The ranking holds** when every pair of seeds shares at least {MIN_RANKED} ranked methods and has "
    f"τ-b ≥ {TAU_HOLDS:g}; it **does not hold** when some pair has τ-b < {TAU_HOLDS:g}; otherwise (fewer shared "
    "methods, or τ-b undefined because a seed gives every shared method the same accuracy) it **cannot be told**.",
    "A **swapped pair** is two ranked methods whose order at T(IoU) 0.3 reverses between two seeds. Within each "
    "seed that ran both, their paired patient-bootstrap difference on that seed's boxes says whether the seed "
    "tells them apart (p < 0.05). A swap is **within noise** unless the pair differs significantly in one "
    "direction on one seed and in the other direction on another; then it is a **significant reversal**. It is "
    "**not tested** when fewer than two seeds have both methods' per-box hits at that threshold.",
)


def _summary_quantities() -> list[tuple[str, str, str, str, Callable[[dict], float]]]:
    """(quantity, label, threshold, column title, reader) of the summary table."""
    out: list = [
        ("iou_acc", MACRO, t, f"Acc. T(IoU)={t}", (lambda s, t=t: sa.value(s, "iou_acc", MACRO, t))) for t in ACC_THRESHOLDS
    ]
    out.append(("gain_over_guess", MACRO, SANITY_T, f"Gain over best guess ({SANITY_T})", _gain))
    out.append(("right_class_rate", MACRO, "", "Right-class rate", _right_class))
    out.append(("auroc_mean", "mean", "", "Mean AUROC", lambda s: sa.num((s.get("auroc") or {}).get("mean"))))
    return out


def _gain(summary: dict) -> float:
    s = summary.get("sanity")
    row = macro_gain_row(s, SANITY_T) if isinstance(s, dict) else None
    return sa.num(row.get("diff")) if row else math.nan


def _right_class(summary: dict) -> float:
    s = summary.get("sanity")
    cs = s.get("class_specificity") if isinstance(s, dict) else None
    rcr = cs.get("right_class_rate") if isinstance(cs, dict) else None
    macro = rcr.get("macro") if isinstance(rcr, dict) else None
    return sa.num(macro.get("rate")) if isinstance(macro, dict) else math.nan


def _size_acc(summary: dict, size_bin: str) -> float:
    return sa.by_size(summary, size_bin, "iou_acc", MACRO, SIZE_T)[0]


# -- which runs qualify ------------------------------------------------------------------------


def _diff_paths(a: Any, b: Any, prefix: str) -> list[str]:
    """Dotted paths where two config trees differ, with both leaf values where short."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            path = f"{prefix}.{k}" if prefix else str(k)
            if path in IGNORED_KEYS:
                continue
            if k not in a or k not in b:
                out.append(f"{path} (only in one run)")
            else:
                out += _diff_paths(a[k], b[k], path)
        return out
    if a == b:
        return []
    va, vb = json.dumps(a, default=str), json.dumps(b, default=str)
    return [f"{prefix} ({va} vs {vb})" if len(va) + len(vb) <= 60 else prefix]


def run_seed(rs: RunSet, run_dir: Path) -> int | None:
    """The run's seed: manifest.json `seed`, else config.yaml `seed`; None when neither records one."""
    for source in (rs.manifests.get(run_dir, {}), rs.configs.get(run_dir, {})):
        v = source.get("seed")
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            try:
                return int(v)
            except ValueError:
                continue
    return None


def compare_runs(rs: RunSet) -> tuple[dict[Path, int] | None, str | None]:
    """(run folder -> seed) when the runs qualify for the seed section, else (None, why not).

    A single run gives (None, None): there is nothing to compare and nothing to explain."""
    dirs = rs.run_dirs
    if len(dirs) < 2:
        return None, None
    seeds: dict[Path, int] = {}
    for d in dirs:
        s = run_seed(rs, d)
        if s is None:
            return None, f"`{d}` records no seed (neither manifest.json nor config.yaml has `seed`)"
        seeds[d] = s
    for a, b in combinations(dirs, 2):
        if seeds[a] == seeds[b]:
            return None, f"`{a}` and `{b}` both have seed {seeds[a]} (the section compares runs of different seeds)"
    for d in dirs:
        if not rs.configs.get(d):
            return None, f"`{d}` has no config.yaml, so its settings cannot be compared with the other runs'"
    base = dirs[0]
    cfg0 = rs.configs[base]
    for d in dirs[1:]:
        cfg = rs.configs[d]
        diffs = []
        for sec in COMPARED_SECTIONS:
            diffs += _diff_paths({sec: cfg0.get(sec)}, {sec: cfg.get(sec)}, "")
        m0, m1 = cfg0.get("methods") or {}, cfg.get("methods") or {}
        for m in (m for m in m0 if m in m1):
            diffs += _diff_paths(m0[m], m1[m], f"methods.{m}")
        if diffs:
            shown = ", ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            return None, f"`{d}` differs from `{base}` in more than the seed and the method set: {shown}"
    names = [m.method for m in rs.methods.values()]
    if not any(names.count(n) > 1 for n in names):
        return None, "no method was scored in more than one of these runs"
    return seeds, None


# -- numbers -----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample SD (n - 1; NaN with one value), min, max and n of the finite values."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    return {
        "n_seeds": n,
        "mean": float(v.mean()) if n else math.nan,
        "sd": float(v.std(ddof=1)) if n > 1 else math.nan,
        "min": float(v.min()) if n else math.nan,
        "max": float(v.max()) if n else math.nan,
    }


def kendall(x: list[float], y: list[float]) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p-value; (NaN, NaN) with fewer than two pairs."""
    if len(x) < 2:
        return math.nan, math.nan
    from scipy.stats import kendalltau

    r = kendalltau(x, y)
    return float(r.statistic), float(r.pvalue)


def _fmt_spread(s: dict[str, float], n_runs: int, signed: bool = False) -> str:
    if not s["n_seeds"]:
        return "–"
    f = (lambda v: f"{v:+.2f}") if signed else (lambda v: f"{v:.2f}")
    if s["n_seeds"] == 1:
        return f"{f(s['mean'])} (n=1)"
    text = f"{f(s['mean'])} ± {s['sd']:.2f} ({f(s['min'])}, {f(s['max'])})"
    return text + (f", n={s['n_seeds']}" if s["n_seeds"] != n_runs else "")


@dataclass
class SeedSection:
    """The section's tables and words; `tables` is empty when the runs do not qualify (`reason` says why)."""

    title: str = SECTION_TITLE
    tables: list[Table] = field(default_factory=list)
    rules: tuple[str, ...] = RULES
    verdict: str = ""  # the sentence saying whether the ranking holds
    holds: bool | None = None  # True / False, None when it cannot be told
    notes: list[str] = field(default_factory=list)
    reason: str | None = None
    references: dict[str, bool] = field(default_factory=dict)  # row label -> is a reference
    colors: dict[str, str] = field(default_factory=dict)  # row label -> the method's report colour


def build_section(rs: RunSet, colors: dict[str, str] | None = None, *, n_boot: int = 1000,
                  seed: int = 0) -> SeedSection | None:
    """The section for runs that differ only in seed; None for a single run; tables empty with a
    `reason` when several runs do not qualify. `n_boot`, `seed`: the swapped pairs' paired bootstrap."""
    seeds, reason = compare_runs(rs)
    if seeds is None:
        return None if reason is None else SeedSection(reason=reason)
    colors = colors or {}
    runs = sorted(rs.run_dirs, key=lambda d: seeds[d])
    # registered name -> {run: summary}; rows in report order (methods first, references last)
    per_method: dict[str, dict[Path, dict]] = {}
    per_box: dict[str, dict[Path, pd.DataFrame]] = {}
    roles: dict[str, str] = {}
    color_of: dict[str, str] = {}
    for name, m in rs.methods.items():
        per_method.setdefault(m.method, {})[m.run_dir] = m.summary
        per_box.setdefault(m.method, {})[m.run_dir] = m.per_box
        roles.setdefault(m.method, role_of(m))
        if name in colors:
            color_of.setdefault(m.method, colors[name])
    order = sorted(per_method, key=lambda k: ("method", "guess", "ceiling").index(roles[k]) if roles[k] in ROLE_TEXT else 0)
    labels = {k: k if roles[k] == "method" else f"{k} (reference)" for k in order}

    section = SeedSection(
        references={labels[k]: roles[k] != "method" for k in order},
        colors={labels[k]: color_of[k] for k in order if k in color_of},
    )
    section.tables.append(_summary_table(per_method, order, labels, roles, runs, seeds))
    size = _size_table(per_method, order, labels, roles, runs, seeds)
    if size is not None:
        section.tables.append(size)
    ranking, accs = _ranking_table(per_method, order, labels, roles, runs, seeds)
    section.tables.append(ranking)
    kt, section.holds, section.verdict = _kendall_table(accs, roles, runs, seeds)
    section.tables.append(kt)
    swaps = swapped_pairs(accs, roles, runs)
    if swaps:
        table, words = _swap_table(swaps, per_box, runs, seeds, n_boot, seed)
        section.tables.append(table)
        section.verdict += " " + words
    revs = {d: str(rs.manifests.get(d, {}).get("git_revision") or "") for d in runs}
    if len({r for r in revs.values() if r}) > 1:
        section.notes.append("The runs were made at different git revisions ("
                             + ", ".join(f"seed {seeds[d]}: `{r[:12]}`" for d, r in revs.items() if r)
                             + "); the code may differ beyond the seed.")
    return section


def _summary_table(per_method, order, labels, roles, runs, seeds) -> Table:
    quantities = _summary_quantities()
    rows, disp, vals = [], {}, {}
    for k in order:
        by_run = per_method[k]
        n_runs = len(by_run)
        disp[labels[k]] = {"Seeds": str(n_runs)}
        vals[labels[k]] = {"Seeds": float(n_runs)}
        for quantity, label, t, title, read in quantities:
            per_seed = [(seeds[d], read(by_run[d])) for d in runs if d in by_run]
            s = spread([v for _, v in per_seed])
            disp[labels[k]][title] = _fmt_spread(s, n_runs, signed=quantity == "gain_over_guess")
            vals[labels[k]][title] = s["mean"]
            rows.append(_long_row(k, roles[k], quantity, label, t, "", s, per_seed))
    titles = ["Seeds", *(q[3] for q in quantities)]
    return _table(
        "seeds_summary",
        "Mean and spread over seeds",
        "Per method, over the seeds that ran it: mean ± sample SD (min, max) of macro IoU accuracy at three "
        f"thresholds, of the macro gain over the best guess at T(IoU) {SANITY_T} and of the right-class rate "
        "(both from the scorer's sanity block), and of the mean AUROC; \"Seeds\": how many seeds ran the method "
        "(a trailing n= counts the seeds that have the quantity, where some lack it). Every seed's value is in the CSV.",
        rows, disp, vals, order, labels, titles,
    )


def _size_table(per_method, order, labels, roles, runs, seeds) -> Table | None:
    bins: list[str] = []
    for by_run in per_method.values():
        for s in by_run.values():
            bins += [b for b in sa.size_bins(s) if b not in bins]
    if not bins:
        return None
    seen = list(bins)
    bins.sort(key=lambda b: (SIZE_BINS.index(b) if b in SIZE_BINS else len(SIZE_BINS), seen.index(b)))
    rows, disp, vals = [], {}, {}
    for k in order:
        by_run = per_method[k]
        disp[labels[k]], vals[labels[k]] = {}, {}
        for b in bins:
            per_seed = [(seeds[d], _size_acc(by_run[d], b)) for d in runs if d in by_run]
            s = spread([v for _, v in per_seed])
            disp[labels[k]][f"{b} boxes"] = _fmt_spread(s, len(by_run))
            vals[labels[k]][f"{b} boxes"] = s["mean"]
            rows.append(_long_row(k, roles[k], "iou_acc", MACRO, SIZE_T, b, s, per_seed))
    return _table(
        "seeds_size_bins",
        f"Accuracy by box size over seeds (T(IoU) = {SIZE_T})",
        f"Macro IoU accuracy at T(IoU) {SIZE_T} per ground-truth box-size bin: mean ± sample SD (min, max) over "
        "the seeds that ran the method.",
        rows, disp, vals, order, labels, [f"{b} boxes" for b in bins],
    )


def _long_row(method, role, quantity, label, t, size_bin, s, per_seed) -> dict:
    return dict(method=method, role=ROLE_TEXT.get(role, role), quantity=quantity, label=label, threshold=t,
                size_bin=size_bin, **s, seeds=";".join(str(x) for x, _ in per_seed),
                values=";".join(f"{v:.10g}" for _, v in per_seed))


def _table(name, title, caption, rows, disp, vals, order, labels, titles) -> Table:
    index = pd.Index([labels[k] for k in order], name="Method")
    display = pd.DataFrame.from_dict(disp, orient="index").reindex(index=index, columns=titles)
    values = pd.DataFrame.from_dict(vals, orient="index").reindex(index=index, columns=titles).astype(float)
    bold = _best_mask(values.reset_index(drop=True), None)
    bold.index, bold.columns = index, titles
    if "Seeds" in titles:
        bold["Seeds"] = False
    return Table(name, title, caption, pd.DataFrame(rows), display, bold, values)


def _ranks(acc: dict[str, float]) -> dict[str, int]:
    """Competition ranks (1 = highest; ties share the best rank) of the finite accuracies."""
    from scipy.stats import rankdata

    keys = [k for k, v in acc.items() if not math.isnan(v)]
    r = rankdata([-acc[k] for k in keys], method="min") if keys else []
    return {k: int(x) for k, x in zip(keys, r)}


def _ranking_table(per_method, order, labels, roles, runs, seeds) -> tuple[Table, dict[Path, dict[str, float]]]:
    accs = {d: {k: sa.value(per_method[k][d], "iou_acc", MACRO, RANK_T) for k in order if d in per_method[k]} for d in runs}
    ranks = {d: _ranks({k: v for k, v in accs[d].items() if roles[k] == "method"}) for d in runs}
    ranks_all = {d: _ranks(accs[d]) for d in runs}
    mean_rank = {k: float(np.mean([ranks[d][k] for d in runs if k in ranks[d]])) for k in order
                 if any(k in ranks[d] for d in runs)}
    rows_order = sorted(order, key=lambda k: (roles[k] != "method", mean_rank.get(k, math.inf) if roles[k] == "method" else 0))
    cols = [f"Seed {seeds[d]}" for d in runs] + ["Mean rank"]
    rows, disp, vals = [], {}, {}
    for k in rows_order:
        disp[labels[k]], vals[labels[k]] = {}, {}
        for d, col in zip(runs, cols):
            a = accs[d].get(k, math.nan)
            r = ranks[d].get(k)
            if k not in accs[d]:
                text = "–"
            elif r is None:
                text = "–" if math.isnan(a) else f"({a:.2f})"
            else:
                text = f"{r} ({a:.2f})"
            disp[labels[k]][col] = text
            vals[labels[k]][col] = float(r) if r is not None else math.nan
            if k in accs[d]:
                rows.append(dict(method=k, role=ROLE_TEXT.get(roles[k], roles[k]), seed=seeds[d], run=str(d),
                                 threshold=RANK_T, iou_acc=a, rank=r if r is not None else math.nan,
                                 rank_with_references=ranks_all[d].get(k, math.nan)))
        mr = mean_rank.get(k, math.nan)
        disp[labels[k]]["Mean rank"] = "–" if math.isnan(mr) else f"{mr:.1f}"
        vals[labels[k]]["Mean rank"] = mr
    index = pd.Index([labels[k] for k in rows_order], name="Method")
    display = pd.DataFrame.from_dict(disp, orient="index").reindex(index=index, columns=cols)
    values = pd.DataFrame.from_dict(vals, orient="index").reindex(index=index, columns=cols).astype(float)
    table = Table(
        "seeds_ranking",
        f"Ranking per seed (macro IoU accuracy at T(IoU) = {RANK_T})",
        f"Rank of each method in each seed by macro IoU accuracy at T(IoU) {RANK_T} (the accuracy in brackets; "
        "ranks among the methods that seed scored, references not ranked), and the mean rank over the seeds "
        "that ran the method; rows by mean rank.",
        pd.DataFrame(rows), display, None, values,
    )
    return table, accs


def _kendall_table(accs, roles, runs, seeds) -> tuple[Table, bool | None, str]:
    rows, disp, vals = [], {}, {}
    cols = ["Methods", "τ-b", "p", f"τ-b ≥ {TAU_HOLDS:g}", "With references", "τ-b with references"]
    below, unknown, lowest = [], [], None
    for a, b in combinations(runs, 2):
        both = [k for k in accs[a] if k in accs[b] and not math.isnan(accs[a][k]) and not math.isnan(accs[b][k])]
        ranked = [k for k in both if roles[k] == "method"]
        tau, p = kendall([accs[a][k] for k in ranked], [accs[b][k] for k in ranked])
        tau_all, p_all = kendall([accs[a][k] for k in both], [accs[b][k] for k in both])
        pair = f"{seeds[a]} vs {seeds[b]}"
        judged = len(ranked) >= MIN_RANKED and not math.isnan(tau)
        ok = judged and tau >= TAU_HOLDS
        if not math.isnan(tau) and tau < TAU_HOLDS:
            below.append((pair, tau))
        elif not judged:
            unknown.append(pair)
        if not math.isnan(tau) and (lowest is None or tau < lowest[1]):
            lowest = (pair, tau)
        rows.append(dict(seed_a=seeds[a], seed_b=seeds[b], run_a=str(a), run_b=str(b), threshold=RANK_T,
                         n_methods=len(ranked), tau_b=tau, p_value=p, holds=bool(ok), judged=bool(judged),
                         methods=";".join(ranked), n_with_references=len(both), tau_b_with_references=tau_all,
                         p_value_with_references=p_all))
        disp[pair] = {
            "Methods": str(len(ranked)),
            "τ-b": "–" if math.isnan(tau) else f"{tau:+.2f}",
            "p": "–" if math.isnan(p) else f"{p:.3g}",
            f"τ-b ≥ {TAU_HOLDS:g}": "yes" if ok else ("no" if judged else "cannot tell"),
            "With references": str(len(both)),
            "τ-b with references": "–" if math.isnan(tau_all) else f"{tau_all:+.2f}",
        }
        vals[pair] = {"Methods": len(ranked), "τ-b": tau, "p": p, f"τ-b ≥ {TAU_HOLDS:g}": math.nan,
                      "With references": len(both), "τ-b with references": tau_all}
    if below:
        holds: bool | None = False
        verdict = (f"**The ranking does not hold across seeds**: τ-b < {TAU_HOLDS:g} for seeds "
                   + ", ".join(f"{p} ({t:+.2f})" for p, t in below) + ".")
    elif unknown:
        holds = None
        verdict = ("**Whether the ranking holds cannot be told**: seeds " + ", ".join(unknown)
                   + f" share fewer than {MIN_RANKED} ranked methods or give them all the same accuracy.")
    else:
        holds = True
        verdict = (f"**The ranking holds across seeds**: every pairwise τ-b ≥ {TAU_HOLDS:g}"
                   + (f" (lowest {lowest[1]:+.2f}, seeds {lowest[0]})." if lowest else "."))
    index = pd.Index(list(disp), name="Seeds")
    display = pd.DataFrame.from_dict(disp, orient="index").reindex(index=index, columns=cols)
    values = pd.DataFrame.from_dict(vals, orient="index").reindex(index=index, columns=cols).astype(float)
    table = Table(
        "seeds_kendall",
        "Does the ranking hold? Kendall's τ-b between seeds",
        f"For each pair of seeds: the methods both scored (references excluded), Kendall's τ-b between their macro "
        f"IoU accuracies at T(IoU) {RANK_T} (ties handled) with its two-sided p-value, whether τ-b ≥ {TAU_HOLDS:g}, "
        "and the same τ-b with the references included.",
        pd.DataFrame(rows), display, None, values, text_columns=(f"τ-b ≥ {TAU_HOLDS:g}",),
    )
    return table, holds, verdict


def swapped_pairs(accs: dict[Path, dict[str, float]], roles: dict[str, str], runs: list[Path]) -> list[tuple[str, str]]:
    """Pairs of ranked methods whose order (strictly, by macro accuracy) reverses between some two runs."""
    ranked = sorted({k for d in runs for k in accs[d] if roles[k] == "method"})
    out = []
    for x, y in combinations(ranked, 2):
        signs = {np.sign(accs[d][x] - accs[d][y]) for d in runs
                 if x in accs[d] and y in accs[d] and not math.isnan(accs[d][x] - accs[d][y])}
        if {1.0, -1.0} <= signs:
            out.append((x, y))
    return out


def _swap_table(swaps, per_box, runs, seeds, n_boot: int, seed: int) -> tuple[Table, str]:
    """Each swapped pair's paired difference within every seed that ran both, and the words for the verdict."""
    from wsl_bench.report.scoring_api import paired_comparison

    cols = [f"Seed {seeds[d]}" for d in runs] + ["Swap"]
    rows, disp, vals, kinds = [], {}, {}, {}
    for x, y in swaps:
        label = f"{x} − {y}"
        disp[label], vals[label] = {}, {}
        directions, pair_rows = set(), []
        for d, col in zip(runs, cols):
            disp[label][col], vals[label][col] = "–", math.nan
            if d not in per_box[x] or d not in per_box[y]:
                continue
            try:
                c = paired_comparison(per_box[x][d], per_box[y][d], "iou_acc", RANK_T, MACRO, None, n_boot, seed)
            except ValueError:  # per-box tables without the hit column, or of different boxes
                continue
            if c.significant and c.diff != 0:
                directions.add(1 if c.diff > 0 else -1)
            disp[label][col] = (f"{c.diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}], "
                                f"p {'< 0.001' if c.p_value < 1e-3 else f'= {c.p_value:.3g}'}{'*' if c.significant else ''}")
            vals[label][col] = c.diff
            pair_rows.append(dict(method_a=x, method_b=y, seed=seeds[d], run=str(d), threshold=RANK_T, diff=c.diff,
                                  ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value, significant=c.significant))
        verdict = ("significant reversal" if directions == {1, -1} else "within noise" if len(pair_rows) >= 2
                   else "not tested")
        disp[label]["Swap"], vals[label]["Swap"] = verdict, math.nan
        rows += [{**r, "swap": verdict} for r in pair_rows]
        kinds.setdefault(verdict, []).append(label)
    index = pd.Index(list(disp), name="Pair")
    display = pd.DataFrame.from_dict(disp, orient="index").reindex(index=index, columns=cols)
    values = pd.DataFrame.from_dict(vals, orient="index").reindex(index=index, columns=cols).astype(float)
    table = Table(
        "seeds_swaps",
        "Swapped pairs: does each seed tell them apart?",
        f"Every two ranked methods whose order at T(IoU) {RANK_T} reverses between two seeds: their difference in "
        "macro IoU accuracy within each seed, on that seed's boxes, with the paired patient-bootstrap 95 % CI and "
        "two-sided p (* p < 0.05); a swap is a significant reversal only when the pair differs significantly in "
        "opposite directions on two seeds.",
        pd.DataFrame(rows), display, None, values, text_columns=("Swap",),
    )
    n, separated = len(swaps), sum(bool(r["significant"]) for r in rows)
    parts = [f"{len(v)} {k} ({', '.join(v)})" for k, v in kinds.items() if k != "within noise"]
    if "within noise" in kinds:
        parts.insert(0, f"{len(kinds['within noise'])} within noise")
    words = (f"Swapped pair{'s' if n != 1 else ''} ({n}): " + "; ".join(parts) + "."
             + (" No seed tells any swapped pair apart (every p ≥ 0.05)." if rows and not separated else ""))
    return table, words
