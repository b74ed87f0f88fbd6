"""The report's figures (seaborn), each saved as PNG and PDF at 300 dpi.

All numbers come from the tidy tables of `wsl_bench.report.tables` (themselves read from the
scoring summaries), so a figure and its table always agree.
"""

from __future__ import annotations

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
