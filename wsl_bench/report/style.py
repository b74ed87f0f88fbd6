"""One colour per method, the same in every figure, the HTML viewer and the galleries.

Methods take seaborn's colour-blind palette in report order; the sanity baselines (random map,
centre prior, lung prior) take fixed greys and dashed lines, so they read as references. With many
methods the figures draw one panel per method family (`panel_groups`): the colours are then chosen so
that the methods sharing a panel have distinct hues (one seaborn palette variant per panel).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written headless; never open a window

import math  # noqa: E402

import matplotlib.colors as mcolors  # noqa: E402
import seaborn as sns  # noqa: E402

from wsl_bench.references import GUESS_REFERENCES  # noqa: E402

REFERENCE_COLORS = {"prior-center": "#555555", "prior-lung": "#8c8c8c", "random": "#bdbdbd"}
CEILING_COLOR = "#1a1a1a"  # the supervised ceiling (oracle-seg): near-black, dotted in the curves
PANEL_METHODS = 6  # at most this many methods share a figure panel (beyond, a family is split)
SMALL_FAMILY = 2  # families this small share a panel with their neighbours
PANEL_PALETTES = ("colorblind", "dark", "deep", "bright", "muted")  # no pastel: too light on white
GT_COLOR = "#00e676"
DPI = 300


def panel_groups(names: list[str], families: dict[str, str], max_per_panel: int = PANEL_METHODS) -> list[tuple[str, list[str]]]:
    """(title, methods) per figure panel: one family per panel, in order of first appearance; a family
    larger than `max_per_panel` is split evenly ("cam 1/2"), and families of at most SMALL_FAMILY methods
    share a panel ("attributions · can", placed where the first of them appears) while it holds no more
    than `max_per_panel`."""
    by_family: dict[str, list[str]] = {}
    for n in names:
        by_family.setdefault(families.get(n) or "other", []).append(n)
    panels: list[list] = []  # [title, names, mergeable]
    for fam, members in by_family.items():
        k = math.ceil(len(members) / max_per_panel)
        size = math.ceil(len(members) / k)
        if k > 1:
            panels += [[f"{fam} {i + 1}/{k}", members[i * size:(i + 1) * size], False] for i in range(k)]
            continue
        small = len(members) <= SMALL_FAMILY
        shared = next((p for p in panels if small and p[2] and len(p[1]) + len(members) <= max_per_panel), None)
        if shared is not None:
            shared[0], shared[1] = f"{shared[0]} · {fam}", shared[1] + members
        else:
            panels.append([fam, list(members), small])
    return [(t, m) for t, m, _ in panels]


def method_colors(
    names: list[str], references: dict[str, bool] | None = None, groups: list[tuple[str, list[str]]] | None = None
) -> dict[str, str]:
    """name -> hex colour; `references` says which names are sanity baselines (default: by name).

    With `groups` (figure panels, from `panel_groups`), the methods of one panel take distinct hues from
    one palette variant and each panel the next variant, so colours differ within a panel and, as far
    as the palettes allow, across panels; names in no group and no reference are drawn near-black."""
    refs = references or {n: n.rsplit("/", 1)[-1] in GUESS_REFERENCES for n in names}
    if groups:
        out: dict[str, str] = {}
        used: set[str] = set()
        for p, (_, members) in enumerate(groups):
            variant = [c for i, c in enumerate(sns.color_palette(PANEL_PALETTES[p % len(PANEL_PALETTES)], 10)) if i != 7]
            extra = sns.color_palette("husl", max(0, len(members) - len(variant)) + 4)
            pool = [mcolors.to_hex(c) for c in (*variant, *extra)]
            for n in members:
                colour = next((c for c in pool if c not in used), pool[0])
                out[n] = colour
                used.add(colour)
        grey = method_colors([n for n in names if refs[n]], {n: True for n in names if refs[n]}) if any(refs.values()) else {}
        return {n: out.get(n) or grey.get(n) or CEILING_COLOR for n in names}
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
