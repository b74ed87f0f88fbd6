"""The "Per reader" section: each method scored against the consensus boxes and against every reader's own.

Datasets read by several radiologists (VinDr-CXR: 3 per film) have the score stage also write
``scores/<method>/readers/<reader>/summary.json``; this section puts their macro IoU accuracy beside the
consensus value and says how far the readers are apart. Runs without readers get no section.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.report import summary_access as sa
from wsl_bench.report.runs import MethodScores, RunSet
from wsl_bench.report.tables import MACRO, Table, to_markdown

READER_THRESHOLDS = ("0.3", "0.5")
TITLE = "Per reader"


def reader_summaries(m: MethodScores) -> dict[str, dict]:
    """{reader: summary.json} of one method's per-reader scores, in reader order ({} when it has none)."""
    folder = Path(m.run_dir) / "scores" / m.method / "readers"
    out = {}
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if (p / "summary.json").is_file()):
            with open(sub / "summary.json", encoding="utf-8") as fh:
                out[sub.name] = json.load(fh)
    return out


def _cell(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.3f}"


def per_reader_table(rs: RunSet) -> Table | None:
    """Macro IoU accuracy at T(IoU) 0.3 and 0.5 per method: consensus, each reader, and the readers'
    spread (max - min, and SD); None when no method has per-reader scores."""
    by_method = {name: reader_summaries(m) for name, m in rs.methods.items()}
    readers = sorted({r for s in by_method.values() for r in s})
    if not readers:
        return None
    rows, cells, values = [], [], []
    for name, m in rs.methods.items():
        for t in READER_THRESHOLDS:
            consensus = sa.value(m.summary, "iou_acc", MACRO, t)
            per = [sa.value(by_method[name][r], "iou_acc", MACRO, t) if r in by_method[name] else math.nan
                   for r in readers]
            finite = [v for v in per if math.isfinite(v)]
            spread = max(finite) - min(finite) if finite else math.nan
            sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
            row = [consensus, *per, spread, sd]
            rows.append(dict(method=name, threshold=t, consensus=consensus, **dict(zip(readers, per)),
                             reader_range=spread, reader_sd=sd))
            values.append(row)
            cells.append([_cell(v) for v in row])
    columns = ["Consensus", *readers, "Reader range", "Reader SD"]
    index = pd.MultiIndex.from_tuples([(r["method"], r["threshold"]) for r in rows], names=["Method", "T(IoU)"])
    display = pd.DataFrame(cells, index=index, columns=columns)
    return Table(
        "per_reader",
        TITLE,
        "Macro IoU accuracy (best candidate's IoU > T) against the fused consensus boxes and against each "
        "radiologist's own boxes on the same films (same policy and options); reader range: largest minus smallest "
        "reader value, reader SD: their standard deviation. A reader with no box on the scored films shows –.",
        pd.DataFrame(rows),
        display,
        None,
        pd.DataFrame(values, index=index, columns=columns),
    )


def per_reader_markdown(rs: RunSet) -> list[str]:
    """The section's Markdown lines ([] for a run without per-reader scores)."""
    t = per_reader_table(rs)
    if t is None:
        return []
    return [f"## {t.title}", "", t.caption, "", to_markdown(t.display, t.bold), ""]
