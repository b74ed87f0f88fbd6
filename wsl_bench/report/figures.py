"""The report's figures (seaborn), each saved as PNG and PDF at 300 dpi.

All numbers come from the tidy tables of `wsl_bench.report.tables` (themselves read from the
scoring summaries), so a figure and its table always agree.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from wsl_bench.io import atomic_path
from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.report import summary_access as sa
from wsl_bench.report.style import DPI, apply_theme
from wsl_bench.report.tables import MACRO, display_label


def save_figure(fig: plt.Figure, out_dir: Path, stem: str) -> Path:
    """Write figures/<stem>.png and .pdf (300 dpi) atomically; returns the PNG path.

    Both files are byte-reproducible (no creation date in the PDF), so regenerating an unchanged report
    leaves git nothing to store."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    for ext in ("png", "pdf"):
        with atomic_path(out_dir / f"{stem}.{ext}") as tmp:
            # PNG: compress level 3 is 4x faster than 6 and ~10 % larger
            extra = {"pil_kwargs": {"compress_level": 3}} if ext == "png" else {"metadata": {"CreationDate": None}}
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches="tight", **extra)
    plt.close(fig)
    return png


RASTER_MAX_BYTES = 2_900_000  # each gallery PNG and PDF stays under 3 MB
RASTER_JPEG_QUALITY = 90


def _png_bytes(img, dpi: float, quantize: bool) -> bytes:
    from PIL import Image

    if quantize:  # 256 colours, dithered: a third of the bytes, invisible at print resolution
        img = img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    buf = io.BytesIO()
    img.save(buf, format="png", dpi=(dpi, dpi), compress_level=6)
    return buf.getvalue()


def save_raster_figure(fig: plt.Figure, out_dir: Path, stem: str, max_bytes: int = RASTER_MAX_BYTES) -> Path:
    """Write figures/<stem>.png and .pdf of an image-heavy figure (the galleries) from one 300-dpi raster.

    The PNG is lossless when that fits `max_bytes`, else a dithered 256-colour PNG; the PDF embeds the
    raster as one JPEG (quality 90), where matplotlib would embed every tile losslessly (tens of MB at
    27 methods). Should either still be too large, the raster is scaled down (the dpi written with it
    drops accordingly, so the printed size stays). Byte-reproducible: no dates in either file."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # the figure lays itself out
    plt.close(fig)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    dpi = float(DPI)
    while True:
        png = _png_bytes(img, dpi, quantize=False)
        if len(png) > max_bytes:
            png = _png_bytes(img, dpi, quantize=True)
        pdf = io.BytesIO()
        img.save(pdf, format="pdf", resolution=dpi, quality=RASTER_JPEG_QUALITY, title=stem, creationDate=None, modDate=None)
        if (len(png) <= max_bytes and pdf.tell() <= max_bytes) or min(img.size) < 200:
            break
        img = img.resize((round(img.width * 0.85), round(img.height * 0.85)), Image.LANCZOS)
        dpi *= 0.85
    for ext, data in (("png", png), ("pdf", pdf.getvalue())):
        with atomic_path(out_dir / f"{stem}.{ext}") as tmp:
            Path(tmp).write_bytes(data)
    return out_dir / f"{stem}.png"


def _dashes(refs: dict[str, bool]) -> dict[str, tuple]:
    return {n: ((4, 2) if r else "") for n, r in refs.items()}


def accuracy_curves(long: pd.DataFrame, colors: dict[str, str], refs: dict[str, bool], metric_title: str) -> plt.Figure:
    """Accuracy vs threshold, one panel per class plus macro, one line per method, CI bands."""
    apply_theme()
    df = long.copy()
    df["t"] = df["threshold"].astype(float)
    labels = [*BOX_FINDINGS, MACRO]
    fig, axes = plt.subplots(3, 3, figsize=(9.5, 8.2), sharex=True, sharey=True)
    band_alpha = 0.15 if len(colors) <= 6 else 0.06  # many methods: bands stay readable where they overlap
    for ax, label in zip(axes.flat, labels):
        sub = df[df["label"] == label]
        for name in colors:
            m = sub[sub["method"] == name].sort_values("t")
            if m["value"].isna().all():
                continue
            ls = "--" if refs.get(name) else "-"
            ax.plot(m["t"], m["value"], ls, color=colors[name], marker="o", ms=3, lw=1.4, label=name)
            if m["ci_low"].notna().any():
                ax.fill_between(m["t"], m["ci_low"], m["ci_high"], color=colors[name], alpha=band_alpha, lw=0)
        ax.set_title(display_label(label), fontweight="bold" if label == MACRO else "normal")
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel(metric_title)
    for ax in axes[:, 0]:
        ax.set_ylabel("Accuracy")
    handles, names = axes.flat[-1].get_legend_handles_labels()
    if not handles:
        handles, names = axes.flat[0].get_legend_handles_labels()
    ncol = min(6, max(1, len(names)))
    legend_h = 0.012 + 0.024 * math.ceil(len(names) / ncol)  # fraction of the figure height
    fig.legend(handles, names, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, legend_h, 1, 1))
    return fig


def size_bars(long: pd.DataFrame, colors: dict[str, str], thresholds: tuple[str, ...] = ("0.1", "0.3", "0.5")) -> plt.Figure:
    """Grouped bars of macro IoU accuracy per box-size bin, one bar per method, CI whiskers."""
    apply_theme()
    thresholds = tuple(t for t in thresholds if t in set(long["threshold"])) or tuple(dict.fromkeys(long["threshold"]))[:3]
    bins = list(dict.fromkeys(long["size_bin"]))
    names = [n for n in colors if n in set(long["method"])]
    panel = max(3.6, 0.06 * len(names) * len(bins))  # bars stay readable with many methods
    fig, axes = plt.subplots(1, len(thresholds), figsize=(panel * len(thresholds) + 1.5, 3.4), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(names))
    for ax, t in zip(axes[0], thresholds):
        sub = long[long["threshold"] == t].set_index(["method", "size_bin"])
        for i, name in enumerate(names):
            xs = np.arange(len(bins)) - 0.4 + width * (i + 0.5)
            vals = [sub["value"].get((name, b), np.nan) for b in bins]
            lo = [sub["ci_low"].get((name, b), np.nan) for b in bins]
            hi = [sub["ci_high"].get((name, b), np.nan) for b in bins]
            err = None
            if not all(np.isnan(lo)):
                err = np.array([np.subtract(vals, lo), np.subtract(hi, vals)]).clip(min=0)
            ax.bar(xs, np.nan_to_num(vals), width, color=colors[name], label=name, yerr=err, capsize=1.5, error_kw={"lw": 0.7})
        n = long.drop_duplicates("size_bin").set_index("size_bin")["n_boxes"]
        ax.set_xticks(range(len(bins)), [f"{b}\n(n={n[b]})" for b in bins])
        ax.set_title(f"T(IoU) = {t}")
        ax.set_ylim(0, 1.02)
        ax.grid(axis="x", visible=False)
    axes[0][0].set_ylabel("Macro IoU accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, ncol=1 + len(labels) // 16)
    fig.tight_layout()
    return fig


def class_matrix(long: pd.DataFrame, colors: dict[str, str], t: str = sa.HEADLINE_IOU) -> plt.Figure:
    """Method × class matrix of IoU accuracy at one threshold (default T(IoU) = 0.5)."""
    apply_theme()
    sub = long[long["threshold"] == t]
    order_m = list(dict.fromkeys(sub["method"]))
    mat = sub.pivot(index="method", columns="label", values="value").reindex(index=order_m, columns=[*BOX_FINDINGS, MACRO])
    mat.columns = [display_label(c) for c in mat.columns]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * mat.shape[1], 0.8 + 0.38 * mat.shape[0]))
    sns.heatmap(mat, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", cbar_kws={"label": f"IoU accuracy at T(IoU) = {t}"}, ax=ax,
                annot_kws={"size": 7})
    ax.axvline(mat.shape[1] - 1, color="white", lw=2)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_xticklabels(ax.get_xticklabels(), rotation=35, ha="right")
    for tick in ax.get_yticklabels():  # method names in their report colour
        tick.set_color(colors.get(tick.get_text(), "black"))
        tick.set_fontweight("bold")
    fig.tight_layout()
    return fig


# -- many methods: one panel per family ------------------------------------------------------------


def _line_style(name: str, refs: dict[str, bool]) -> str:
    return "--" if refs.get(name) else ":" if name not in refs else "-"


def family_curves(
    long: pd.DataFrame,
    colors: dict[str, str],
    panels: list[tuple[str, list[str]]],
    reference_lines: list[str],
    refs: dict[str, bool],
    metric_title: str,
    label: str = MACRO,
) -> plt.Figure:
    """Macro accuracy vs threshold in small multiples: one panel per family (`panels`), its methods in
    distinct colours with CI bands and a legend of their own, the references (`reference_lines`: the
    guesses dashed grey, the ceiling dotted near-black) drawn in every panel for comparison."""
    apply_theme()
    df = long[long["label"] == label].copy()
    df["t"] = df["threshold"].astype(float)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.75 * nrows + 0.45), sharex=True, sharey=True, squeeze=False)
    ref_handles: dict[str, object] = {}
    for ax, (title, names) in zip(axes.flat, panels):
        for name in reference_lines:
            m = df[df["method"] == name].sort_values("t")
            if m["value"].isna().all():
                continue
            ls = "--" if refs.get(name) else ":"
            (h,) = ax.plot(m["t"], m["value"], ls, color=colors[name], lw=1.1, label=name, zorder=1)
            ref_handles.setdefault(name, h)
        handles = []
        for name in names:
            m = df[df["method"] == name].sort_values("t")
            if m["value"].isna().all():
                continue
            (h,) = ax.plot(m["t"], m["value"], "-", color=colors[name], marker="o", ms=2.8, lw=1.5, label=name, zorder=3)
            handles.append(h)
            if m["ci_low"].notna().any():
                ax.fill_between(m["t"], m["ci_low"], m["ci_high"], color=colors[name], alpha=0.13, lw=0, zorder=2)
        ax.set_title(title, fontsize=9, fontweight="bold")
        ax.set_ylim(-0.02, 1.02)
        if handles:
            ax.legend(handles=handles, loc="upper right", fontsize=6.5, frameon=True, framealpha=0.85, handlelength=1.6)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for i, ax in enumerate(axes.flat[: len(panels)]):
        ax.xaxis.set_tick_params(labelbottom=True)  # a panel above an empty slot keeps its axis labels
        if i + ncols >= len(panels):
            ax.set_xlabel(metric_title)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{display_label(label)} accuracy")
    if ref_handles:
        fig.legend(list(ref_handles.values()), list(ref_handles), loc="lower center", ncol=len(ref_handles), frameon=False,
                   bbox_to_anchor=(0.5, 0.0), fontsize=7.5, title="drawn in every panel", title_fontsize=7)
    fig.tight_layout(rect=(0, 0.07 if ref_handles else 0, 1, 1))
    return fig


SIZE_MARKERS = {"small": "o", "medium": "s", "large": "^"}


def size_dots(
    long: pd.DataFrame,
    colors: dict[str, str],
    panels: list[tuple[str, list[str]]],
    reference_lines: list[str],
    thresholds: tuple[str, ...] = ("0.1", "0.3", "0.5"),
) -> plt.Figure:
    """Macro IoU accuracy per box-size bin as a dot plot: one row per method (grouped by family, the
    references last), one marker per size bin with its CI whisker, one column per threshold."""
    apply_theme()
    thresholds = tuple(t for t in thresholds if t in set(long["threshold"])) or tuple(dict.fromkeys(long["threshold"]))[:3]
    bins = list(dict.fromkeys(long["size_bin"]))
    present = set(long["method"])
    groups = [(title, [n for n in names if n in present]) for title, names in panels]
    groups = [g for g in groups if g[1]]
    refs_present = [n for n in reference_lines if n in present]
    if refs_present:
        groups.append(("references", refs_present))
    rows: list[tuple[float, str]] = []
    y, seps = 0.0, []  # seps: (y of the group's title row, title)
    for title, names in groups:
        seps.append((y, title))
        y += 0.9
        for n in names:
            rows.append((y, n))
            y += 1.0
        y += 0.3
    bin_colors = dict(zip(bins, sns.color_palette("viridis", len(bins) + 1)[: len(bins)]))
    n_counts = long.drop_duplicates("size_bin").set_index("size_bin")["n_boxes"]
    height = 1.2 + 0.17 * (y + 1)
    fig, axes = plt.subplots(1, len(thresholds), figsize=(2.5 * len(thresholds) + 1.6, height), sharey=True, squeeze=False)
    offsets = np.linspace(-0.25, 0.25, len(bins)) if len(bins) > 1 else np.zeros(1)
    for ax, t in zip(axes[0], thresholds):
        sub = long[long["threshold"] == t].set_index(["method", "size_bin"])
        for (yy, name) in rows:
            for off, b in zip(offsets, bins):
                if (name, b) not in sub.index:
                    continue
                r = sub.loc[(name, b)]
                if np.isnan(r["value"]):
                    continue
                if not (np.isnan(r["ci_low"]) or np.isnan(r["ci_high"])):
                    ax.plot([r["ci_low"], r["ci_high"]], [yy + off] * 2, color=bin_colors[b], lw=0.8, alpha=0.8)
                ax.plot(r["value"], yy + off, SIZE_MARKERS.get(b, "o"), color=bin_colors[b], ms=3.2,
                        label=f"{b} (n={n_counts.get(b, '?')})")
        for sy, _ in seps[1:]:
            ax.axhline(sy - 0.15, color="#999999", lw=0.5)
        ax.set_title(f"T(IoU) = {t}", fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("Macro IoU accuracy")
        ax.grid(axis="y", visible=False)
    ax0 = axes[0][0]
    ax0.set_yticks([yy for yy, _ in rows], [n for _, n in rows], fontsize=6.5)
    for tick, (_, n) in zip(ax0.get_yticklabels(), rows):
        tick.set_color(colors.get(n, "black"))
    ax0.set_ylim(y - 0.5, -0.5)
    for ax in axes[0]:
        for sy, title in seps:  # the family's name on its own row, above its methods
            ax.text(0.01, sy + 0.2, title, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=6.5,
                    fontweight="bold", color="#555555")
    handles, labels = ax0.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(list(uniq.values()), list(uniq), loc="upper center", ncol=len(uniq), frameon=False, bbox_to_anchor=(0.55, 1.0),
               fontsize=7, title="box size (lines: 95 % CI)", title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / height))
    return fig
