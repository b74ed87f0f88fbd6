"""Galleries: the same images for every method, and each method's best and worst cases.

A tile shows the test image (from ``data/gallery.npz``), the method's heatmap for the box's class
(from ``heatmaps/<method>.npz``) as an overlay, the ground-truth box (green) and the predicted boxes
(method colour) that the scoring stage's localizer (`wsl_bench.localize`) draws from that heatmap
under the run's policy. Tiles are small JPEGs the HTML viewer filters; the paper figures are grids
of the same tiles, one page per at most `PAGE_METHODS` methods (families kept together), saved as a
raster PNG and a JPEG-compressed PDF so that each file stays under 3 MB at 300 dpi.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from wsl_bench.io import atomic_path
from wsl_bench.labels import BOX_FINDINGS, box_to_finding
from wsl_bench.report.runs import MethodScores, RunSet
from wsl_bench.report.style import GT_COLOR

TILE = 192  # px, largest side of a gallery tile (smaller gallery images are not upscaled beyond 1.5x)
TILE_MIN = 128
JPEG_QUALITY = 88  # tiles are JPEG: a 29-method gallery stays a few MB instead of tens
CELL_IN = TILE / 300  # inches per tile in the gallery figures: a 192-px tile at its native resolution at 300 dpi
LABEL_IN = 0.95  # inches left of the tiles for the method name and its failed checks
PAGE_METHODS = 10  # methods per gallery page: a page fits a paper page and stays under 3 MB
FAIL_COLOR = "#c0392b"
Box = tuple[float, float, float, float]  # x, y, w, h in original-image pixels


@dataclass(frozen=True)
class Case:
    """One ground-truth box shown in a gallery."""

    image_id: str
    label: str
    box: Box

    @property
    def key(self) -> str:
        return f"{self.image_id}::{self.label}"


@dataclass
class Tile:
    method: str | None  # None: the image with its ground truth only
    case: Case
    kind: str  # "same", "best" or "worst"
    path: Path  # PNG under the report folder
    iou: float


def select_same_cases(boxes: pd.DataFrame, per_class: int = 1, max_cases: int = 8) -> list[Case]:
    """Representative boxes, one per class: the box of median area (deterministic, no randomness)."""
    cases = []
    for label in BOX_FINDINGS:
        sub = boxes[boxes["label"] == label]
        if sub.empty:
            continue
        area = (sub["w"] * sub["h"]).to_numpy()
        order = np.argsort(np.abs(area - np.median(area)), kind="stable")[:per_class]
        for i in order:
            r = sub.iloc[int(i)]
            cases.append(Case(str(r["image_id"]), str(r["label"]), (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"]))))
    return cases[:max_cases]


def select_extremes(per_box: pd.DataFrame, k: int = 3) -> tuple[list[Case], list[Case]]:
    """The k best and k worst boxes of one method by best IoU (ties broken by IoBB, then id)."""
    df = per_box.assign(image_id=per_box["image_id"].astype(str)).sort_values(
        ["best_iou", "best_iobb", "image_id", "label"], ascending=[False, False, True, True], kind="stable"
    )

    def cases(rows: pd.DataFrame) -> list[Case]:
        return [Case(r.image_id, r.label, (float(r.x), float(r.y), float(r.w), float(r.h))) for r in rows.itertuples()]

    best = cases(df.head(k))
    worst = cases(df.iloc[::-1].head(k))
    return best, worst


def _to_rgb(gray: np.ndarray) -> np.ndarray:
    g = np.asarray(gray)
    if g.ndim == 3:
        g = g[..., 0] if g.shape[-1] in (1, 3, 4) else g[0]
    if g.dtype != np.uint8:
        lo, hi = float(np.nanmin(g)), float(np.nanmax(g))
        g = ((g - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def render_tile(
    image: np.ndarray,
    orig_size: tuple[int, int],
    gt: Box,
    heatmap: np.ndarray | None,
    pred_boxes: list[Box] | None,
    color: str,
    side: int = TILE,
) -> np.ndarray:
    """RGB uint8 [side, side, 3]: image, heatmap overlay (jet, alpha 0.45), GT box green, predictions."""
    h0, w0 = orig_size
    base = Image.fromarray(_to_rgb(image)).resize((side, side), Image.BILINEAR)
    rgb = np.asarray(base, dtype=np.float32) / 255.0
    if heatmap is not None:
        hm = np.asarray(Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize((side, side), Image.BILINEAR))
        lo, hi = float(hm.min()), float(hm.max())
        hm = (hm - lo) / (hi - lo) if hi > lo else np.zeros_like(hm)
        colored = matplotlib.colormaps["jet"](hm)[..., :3]
        alpha = (0.15 + 0.5 * hm)[..., None]  # the X-ray stays readable where the map is cold
        rgb = (1 - alpha) * rgb + alpha * colored
    out = Image.fromarray((rgb * 255).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    sx, sy = side / w0, side / h0

    def rect(b: Box, col: str, width: int, halo: bool) -> None:
        x0, y0 = b[0] * sx, b[1] * sy
        # a box under one tile pixel still draws (as a dot) instead of an inverted rectangle
        x1, y1 = max(x0, (b[0] + b[2]) * sx - 1), max(y0, (b[1] + b[3]) * sy - 1)
        if halo:  # a white rim keeps the method colour visible on a hot heatmap
            draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline="#ffffff", width=width + 2)
        draw.rectangle([x0, y0, x1, y1], outline=col, width=width)

    for b in pred_boxes or []:
        rect(b, color, 2, True)
    rect(gt, GT_COLOR, 2, False)
    return np.asarray(out)


def save_tile(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="jpeg", quality=JPEG_QUALITY)
    return path


def tile_side(image: np.ndarray) -> int:
    """Tile side for a gallery image: its own size within [TILE_MIN, TILE] (no pointless upscaling)."""
    return int(min(TILE, max(TILE_MIN, round(1.5 * max(np.asarray(image).shape[:2])))))


class HeatmapSource:
    """Lazy access to one method's heatmap bundle (read once, on first use)."""

    def __init__(self, m: MethodScores):
        self.m = m
        self._maps = None

    def get(self, key: str) -> np.ndarray | None:
        if self._maps is None:
            path = self.m.heatmaps_path
            if not path.is_file():
                self._maps = {}
            else:
                from wsl_bench.heatmaps import read_bundle

                self._maps = read_bundle(path)
        try:
            return np.asarray(self._maps[key], dtype=np.float32)
        except KeyError:
            return None


def build_gallery(
    rs: RunSet,
    out_dir: Path,
    colors: dict[str, str],
    boxes_for: Callable[[MethodScores, np.ndarray, tuple[int, int], str], list[Box] | None],
    k_extremes: int = 3,
) -> list[Tile]:
    """Write gallery/<method>/<case>.jpg tiles; returns them (same images first, then best/worst)."""
    if not rs.gallery_path.is_file():
        return []
    images = np.load(rs.gallery_path, allow_pickle=False)
    sizes = {}
    if {"orig_h", "orig_w"} <= set(rs.images.columns):
        sizes = {str(i): (int(h), int(w)) for i, h, w in zip(rs.images["image_id"], rs.images["orig_h"], rs.images["orig_w"])}

    def orig_size(iid: str) -> tuple[int, int]:
        if iid in sizes:
            return sizes[iid]
        h, w = images[iid].shape[:2]
        return int(h), int(w)

    sources = {n: HeatmapSource(m) for n, m in rs.methods.items()}
    tiles: list[Tile] = []
    written: set[Path] = set()
    iou_of = {
        n: {f"{r.image_id}::{r.label}::{r.x:g}::{r.y:g}": float(r.best_iou) for r in m.per_box.assign(image_id=m.per_box["image_id"].astype(str)).itertuples()}
        for n, m in rs.methods.items()
    }

    def tile(name: str | None, case: Case, kind: str) -> None:
        if case.image_id not in images.files:
            return
        stem = f"{_slug(case.image_id)}__{_slug(case.label)}__{int(case.box[0])}_{int(case.box[1])}"
        path = out_dir / ("_image" if name is None else _slug(name)) / f"{stem}.jpg"
        iou = math.nan
        if name is not None:
            iou = iou_of[name].get(f"{case.image_id}::{case.label}::{case.box[0]:g}::{case.box[1]:g}", math.nan)
        if path not in written:  # a best/worst case may also be one of the same-image cases
            img, size = images[case.image_id], orig_size(case.image_id)
            side = tile_side(img)
            if name is None:
                arr = render_tile(img, size, case.box, None, None, GT_COLOR, side)
            else:
                hm = sources[name].get(case.key)
                preds = boxes_for(rs.methods[name], hm, size, case.label) if hm is not None else None
                arr = render_tile(img, size, case.box, hm, preds, colors[name], side)
            save_tile(arr, path)
            written.add(path)
        tiles.append(Tile(name, case, kind, path, iou))

    same = select_same_cases(rs.boxes)
    for case in same:
        tile(None, case, "same")
        for name in rs.methods:
            tile(name, case, "same")
    for name, m in rs.methods.items():
        best, worst = select_extremes(m.per_box, k_extremes)
        for case in best:
            tile(name, case, "best")
        for case in worst:
            tile(name, case, "worst")
    return tiles


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def gallery_pages(groups: list[tuple[str, list[str]]], per_page: int = PAGE_METHODS) -> list[list[str]]:
    """Methods per gallery page: the groups (family panels, then the references) in order, a group kept
    on one page when it fits, split across pages only when it alone is larger than a page."""
    pages: list[list[str]] = [[]]
    for _, names in groups:
        names = list(names)
        if pages[-1] and len(pages[-1]) + len(names) > per_page:
            pages.append([])
        while names:
            room = per_page - len(pages[-1])
            pages[-1] += names[:room]
            names = names[room:]
            if names:
                pages.append([])
    return [p for p in pages if p]


def _wrap(text: str, width: int = 26) -> str:
    return "\n".join(textwrap.wrap(text, width)) if text else ""


def _row_label(ax, name: str, color: str, verdict: str) -> None:
    """Method name (in its colour) left of a row, and its failed checks in red beneath it."""
    ax.text(-0.06, 0.5, name, transform=ax.transAxes, ha="right", va="bottom" if verdict else "center", fontsize=4.6,
            color=color, fontweight="bold")
    if verdict:
        ax.text(-0.06, 0.46, _wrap(verdict), transform=ax.transAxes, ha="right", va="top", fontsize=3.6, color=FAIL_COLOR,
                linespacing=1.1)


def gallery_figure(
    tiles: list[Tile], methods: list[str], colors: dict[str, str], verdicts: dict[str, str] | None = None
) -> plt.Figure | None:
    """Rows = the image with its ground truth, then one row per method; columns = the same images (one
    representative box per class). A method that fails a sanity check has the failed checks (`verdicts`)
    in red under its name."""
    verdicts = verdicts or {}
    same = [t for t in tiles if t.kind == "same"]
    cases = list(dict.fromkeys(t.case for t in same))
    if not cases:
        return None
    rows = [None, *methods]
    index = {(t.method, t.case): t for t in same}
    width = LABEL_IN + CELL_IN * len(cases)
    height = (CELL_IN + 0.05) * len(rows) + 0.2
    fig, axes = plt.subplots(len(rows), len(cases), figsize=(width, height), squeeze=False)
    for r, name in enumerate(rows):
        for c, case in enumerate(cases):
            ax = axes[r][c]
            ax.set_axis_off()  # no ticks or spines (and no tick layout cost)
            t = index.get((name, case))
            if t is not None:
                ax.imshow(np.asarray(Image.open(t.path)), interpolation="none")
            if r == 0:
                ax.set_title(box_to_finding(case.label), fontsize=5, fontweight="bold")
            if c == 0:
                _row_label(ax, "image + GT" if name is None else name, "black" if name is None else colors[name],
                           "" if name is None else verdicts.get(name, ""))
            if name is not None and t is not None and not math.isnan(t.iou):
                ax.text(0.02, 0.02, f"IoU {t.iou:.2f}", transform=ax.transAxes, fontsize=3.4, color="white",
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
    fig.subplots_adjust(left=LABEL_IN / width, right=0.995, bottom=0.005, top=1 - 0.18 / height, wspace=0.03, hspace=0.05)
    return fig


def extremes_figure(
    tiles: list[Tile], methods: list[str], colors: dict[str, str], verdicts: dict[str, str] | None = None
) -> plt.Figure | None:
    """Rows = methods; columns = its best cases then its worst cases (by best IoU); failed sanity checks
    (`verdicts`) in red under the method's name."""
    verdicts = verdicts or {}
    rows = [m for m in methods if any(t.method == m and t.kind in ("best", "worst") for t in tiles)]
    if not rows:
        return None
    per = {m: [t for t in tiles if t.method == m and t.kind == "best"] + [t for t in tiles if t.method == m and t.kind == "worst"] for m in rows}
    ncol = max(len(v) for v in per.values())
    width = LABEL_IN + CELL_IN * ncol
    height = (CELL_IN + 0.2) * len(rows) + 0.05
    fig, axes = plt.subplots(len(rows), ncol, figsize=(width, height), squeeze=False)
    for r, m in enumerate(rows):
        for c in range(ncol):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(per[m]):
                t = per[m][c]
                ax.imshow(np.asarray(Image.open(t.path)), interpolation="none")
                ax.set_title(f"{t.kind}, IoU {t.iou:.2f}\n{box_to_finding(t.case.label)}", fontsize=3.6)
            if c == 0:
                _row_label(ax, m, colors[m], verdicts.get(m, ""))
    fig.subplots_adjust(left=LABEL_IN / width, right=0.995, bottom=0.005, top=1 - 0.2 / height, wspace=0.03,
                        hspace=0.2 / CELL_IN * 1.05)
    return fig
