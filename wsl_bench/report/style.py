"""One colour per method, the same in every figure, the HTML viewer and the galleries.

Methods take seaborn's colour-blind palette in report order; the sanity baselines (random map,
centre prior, lung prior) take fixed greys and dashed lines, so they read as references.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written headless; never open a window

import matplotlib.colors as mcolors  # noqa: E402
import seaborn as sns  # noqa: E402

from wsl_bench.report.runs import REFERENCE_METHODS  # noqa: E402

REFERENCE_COLORS = {"prior-center": "#555555", "prior-lung": "#8c8c8c", "random": "#bdbdbd"}
GT_COLOR = "#00e676"
DPI = 300


def method_colors(names: list[str], references: dict[str, bool] | None = None) -> dict[str, str]:
    """name -> hex colour; `references` says which names are sanity baselines (default: by name)."""
    refs = references or {n: n.rsplit("/", 1)[-1] in REFERENCE_METHODS for n in names}
    others = [n for n in names if not refs[n]]
    # colorblind's 8th colour is a grey: greys are kept for the sanity references
    base = [c for i, c in enumerate(sns.color_palette("colorblind", 10)) if i != 7]
    palette = base if len(others) <= len(base) else base + sns.color_palette("husl", len(others) - len(base))
    out = {n: mcolors.to_hex(palette[i]) for i, n in enumerate(others)}
    for i, n in enumerate(n for n in names if refs[n]):
        out[n] = REFERENCE_COLORS.get(n.rsplit("/", 1)[-1], ("#444444", "#777777", "#aaaaaa", "#cccccc")[i % 4])
    return out


def apply_theme() -> None:
    """The report's seaborn theme (paper context, white grid, embedded TrueType fonts in PDFs)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "figure.dpi": 100})
