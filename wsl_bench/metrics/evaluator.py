"""The scorer: heatmaps + ground-truth boxes -> one row per box and a summary (`score`).

Modelled on wsolevaluation's accumulate()/compute(): maps are streamed one at a time (upsampled to
the image size, scored, dropped), so memory stays at one full-size map whatever the bundle size.
See docs/scoring.md for the conventions and every choice that is ours.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.heatmaps import bundle_key, check_map
from wsl_bench.images import check_pixels
from wsl_bench.io import atomic_path, write_json
from wsl_bench.localize.geometry import overlaps, pixel_span, xywh_to_xyxy
from wsl_bench.localize.maps import prepare, prepare_map, single_thread, working_size
from wsl_bench.localize.calibrated import calibration_split
from wsl_bench.localize.maxboxacc import MAXBOXACC_IOU
from wsl_bench.localize.policies import SWEEP_GRID, BoxPolicy, check_rule, sweep_overlaps
from wsl_bench.localize.registry import Policy, get_policy
from wsl_bench.metrics.aggregate import (
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    SIZE_BINS,
    fp_column,
    hit_column,
    size_bin,
    summarize_boxes,
)
from wsl_bench.metrics.pixel import MIOU_THRESHOLDS, PxAPAccumulator, pointing_hits, prepared_region_stats
from wsl_bench.metrics.readers import check_boxes
from wsl_bench.metrics.registry import MapView, Metric, plugged_metrics

__all__ = ["DEFAULT_OPTIONS", "BoxScorer", "DatasetScoring", "MapGroup", "ScoreResult", "calibration_split",
           "resolve_options", "score", "write_result"]

# The scorer's options and the built-in policies' (a registered policy may add its own, `Policy.options`).
DEFAULT_OPTIONS = {
    "tau": 0.5,  # threshold policy (and calibrated fallback for a class with no calibration box)
    "components": None,  # all|largest; None = "all" for threshold, both tried for calibrated
    "iou_thresholds": IOU_THRESHOLDS,
    "iobb_thresholds": IOBB_THRESHOLDS,
    "size_bins": SIZE_BINS,
    "pointing_tolerance": 0.0,
    "miou_thresholds": MIOU_THRESHOLDS,
    "sweep_grid": SWEEP_GRID,
    "sweep_size": 0,  # 0 = sweeps at full resolution (exact); N = on a working grid of longer side N
    "workers": 1,  # processes scoring maps in parallel (0 = all cores); results do not depend on it
    "calibration_fraction": 0.5,
    "maxboxacc_iou": MAXBOXACC_IOU,
    "progress": False,
}
MAX_LISTED = 20


@dataclass
class ScoreResult:
    """per_box: one row per ground-truth box; summary: the aggregates written to summary.json."""

    per_box: pd.DataFrame
    summary: dict = field(default_factory=dict)


def resolve_options(policy: str, given: dict) -> dict:
    """The resolved scoring options of `policy` (registered name) given the caller's (None = default).

    Unknown options, options the policy fixes itself and out-of-range values are a ValueError."""
    try:
        pol = get_policy(policy)
    except ValueError:
        pol = None
    known = {**DEFAULT_OPTIONS, **(pol.options if pol is not None else {})}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown scoring option(s) {unknown}; known: {', '.join(sorted(known))}")
    if pol is None:
        get_policy(policy)  # the unknown-policy error, listing the registered ones
    pol.check(given)
    opts = {**known, **{k: v for k, v in given.items() if v is not None}}
    if opts["components"] is not None:
        check_rule(opts["components"])
    if not 0.0 <= float(opts["tau"]) < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {opts['tau']}")
    if not 0.0 < float(opts["calibration_fraction"]) < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {opts['calibration_fraction']}")
    if isinstance(opts["workers"], bool) or int(opts["workers"]) != opts["workers"] or opts["workers"] < 0:
        raise ValueError(f"workers must be a whole number >= 0 (0 = all cores), got {opts['workers']!r}")
    return opts


def _size_lookup(image_sizes, maps):
    if image_sizes is None:
        image_sizes = getattr(maps, "image_sizes", None) or None
    if image_sizes is None:
        raise ValueError("no image sizes: pass image_sizes (dict id -> (h, w), or one int) or --image-size")
    if isinstance(image_sizes, (int, np.integer)):
        if int(image_sizes) < 1:
            raise ValueError(f"image size must be positive, got {image_sizes}")
        n = int(image_sizes)
        check_pixels(n, n, "image size (--image-size)")  # refused before any map is upsampled to it
        return lambda image_id: (n, n)

    def lookup(image_id: str) -> tuple[int, int]:
        try:
            h, w = image_sizes[image_id]
        except KeyError:
            raise ValueError(f"no image size for image {image_id!r}; add it to image_sizes or pass one --image-size") from None
        return check_pixels(h, w, f"image size of {image_id!r}")

    return lookup


def _check_inside(boxes: pd.DataFrame, sizes: np.ndarray) -> None:
    """A box must lie inside its image (0.5 px slack for rounding in box files)."""
    x, y, w, h = (boxes[c].to_numpy() for c in ("x", "y", "w", "h"))
    slack = 0.5
    bad = (x < -slack) | (y < -slack) | (x + w > sizes[:, 1] + slack) | (y + h > sizes[:, 0] + slack)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        r = boxes.iloc[i]
        raise ValueError(
            f"boxes row {i} ({r['image_id']}, {r['label']}): box x={r['x']:g}, y={r['y']:g}, w={r['w']:g}, "
            f"h={r['h']:g} lies outside the {int(sizes[i, 1])}x{int(sizes[i, 0])} (w x h) image; "
            f"check --image-size or the box coordinates"
        )


class _Progress:
    def __init__(self, enabled: bool, total: int, desc: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="map", leave=False)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class MapGroup:
    """The ground-truth boxes of one (image, label) map: table row indices and xyxy boxes."""

    key: str
    image_id: str
    label: str
    size: tuple[int, int]
    rows: np.ndarray
    gt: np.ndarray


class BoxScorer:
    """Scores maps one at a time (`accumulate`) into per-box result columns (`compute`).

    Results live in preallocated arrays indexed by box row, so the hot loop has no pandas in it.
    """

    def __init__(self, policy: BoxPolicy | None, opts: dict, n_boxes: int, masks: Mapping | None = None,
                 plugged: list[Metric] | None = None):
        self.policy = policy
        self.plugged = plugged_metrics() if plugged is None else plugged
        self.opts = opts
        self.masks = masks
        self.pxap = PxAPAccumulator() if masks is not None else None
        self.scored = np.zeros(n_boxes, dtype=bool)
        self.cols: dict[str, np.ndarray] = {
            "missing": np.zeros(n_boxes, dtype=bool),
            "best_iou": np.zeros(n_boxes),
            "best_iobb": np.zeros(n_boxes),
            "pointing_hit": np.zeros(n_boxes, dtype=bool),
            "miou": np.zeros(n_boxes),
            "cnr": np.full(n_boxes, np.nan),
            "n_candidates": np.zeros(n_boxes),
            **{fp_column(t): np.zeros(n_boxes) for t in opts["iobb_thresholds"]},
        }
        for m in self.plugged:
            for col in m.columns(opts):
                self.cols[col] = np.full(n_boxes, m.missing_value, dtype=m.dtype)

    def accumulate(self, group: MapGroup, heatmap, sweep: bool = False):
        """Score the boxes of one map; `heatmap` None = missing map (every box a miss).

        With `sweep`, also return the MaxBoxAcc sweep (best IoU/IoBB per grid threshold) of the map.
        """
        rows, gt, o, c = group.rows, group.gt, self.opts, self.cols
        self.scored[rows] = True
        if heatmap is None:
            c["missing"][rows] = True
            return None
        heatmap = check_map(group.key, heatmap)
        pm = prepare_map(heatmap, group.size)  # `prepare`'s map, read only where it matters
        work = working_size(group.size, o["sweep_size"])
        if self.pxap is not None or (sweep and work == tuple(group.size)):
            pm.prefetch()  # every row
        else:  # the rows that the extremes, the policy's lowest threshold, mIoU and the boxes can need
            thr = [*(self.policy.thresholds if not sweep and self.policy is not None else ()), *o["miou_thresholds"]]
            pm.prefetch(thr, [pixel_span(b[1], b[3], group.size[0]) for b in gt])
            if thr and pm.bounds is not None:
                pm.levels(thr)  # found together
        informative = pm.informative
        c["pointing_hit"][rows] = pointing_hits(None, informative, gt, o["pointing_tolerance"], peak=pm.peak)
        c["miou"][rows], c["cnr"][rows] = prepared_region_stats(pm, gt, o["miou_thresholds"])
        if self.pxap is not None and group.key in self.masks:
            self.pxap.accumulate(group.label, pm.norm, self.masks[group.key], group.key)
        if sweep:
            c["n_candidates"][rows] = np.nan
            for t in o["iobb_thresholds"]:
                c[fp_column(t)][rows] = np.nan
            grid = o["sweep_grid"]
            if work == tuple(group.size) and pm.bounds is not None:  # the upsampled map at the grid's levels
                swept = sweep_overlaps(pm.u, True, gt, group.size, grid, ("all",), source_shape=heatmap.shape,
                                       levels=pm.levels(grid), source=pm.source)
            else:
                wnorm, winf = (pm.norm, informative) if work == tuple(group.size) else prepare(heatmap, work)
                swept = sweep_overlaps(wnorm, winf, gt, group.size, grid, ("all",), source_shape=heatmap.shape)
            if self.plugged:
                self._accumulate_plugged(group, heatmap, pm, None)
            return swept
        cand = self.policy.candidates_of(pm)
        if len(cand):
            iou, iobb = overlaps(gt, cand.boxes)
            c["best_iou"][rows] = iou.max(axis=1)
            c["best_iobb"][rows] = iobb.max(axis=1)
            cand_best = iobb.max(axis=0)
            for t in o["iobb_thresholds"]:
                c[fp_column(t)][rows] = np.count_nonzero(cand_best <= t)
        c["n_candidates"][rows] = len(cand)
        if self.plugged:
            self._accumulate_plugged(group, heatmap, pm, cand.boxes)
        return None

    def _accumulate_plugged(self, group: MapGroup, heatmap, pm, candidates) -> None:
        """The registered metrics' `accumulate` on one map, after the built-in ones."""
        mask = self.masks.get(group.key) if self.masks is not None else None
        view = MapView(group.key, group.image_id, group.label, tuple(group.size), group.gt, heatmap, candidates,
                       mask, pm)
        for m in self.plugged:
            declared = m.columns(self.opts)
            values = m.accumulate(view) or {}
            stray = sorted(set(values) - set(declared))
            if stray:
                raise ValueError(f"metric {m.name!r} returned column(s) {stray} that its columns() does not declare")
            for col, v in values.items():
                if np.ndim(v) not in (0, 1) or (np.ndim(v) == 1 and len(v) != len(group.rows)):
                    raise ValueError(f"metric {m.name!r}, column {col!r}, map {group.key!r}: expected one value or "
                                     f"one per box ({len(group.rows)}), got shape {np.shape(v)}")
                self.cols[col][group.rows] = v

    def compute(self, boxes: pd.DataFrame) -> pd.DataFrame:
        """The scored rows of `boxes` with the result columns added."""
        out = boxes.copy()
        for name, col in self.cols.items():
            out[name] = col
        return out[self.scored].reset_index(drop=True)


def _finish_rows(per_box: pd.DataFrame, opts: dict) -> pd.DataFrame:
    """Add hit flags per threshold (best > T, strictly) and order the columns."""
    for t in opts["iou_thresholds"]:
        per_box[hit_column("iou", t)] = per_box["best_iou"] > t
    for t in opts["iobb_thresholds"]:
        per_box[hit_column("iobb", t)] = per_box["best_iobb"] > t
    first = ["image_id", "label", "x", "y", "w", "h", "patient_id", "size_bin", "area_fraction", "missing",
             "best_iou", "best_iobb", "pointing_hit", "miou", "cnr", "n_candidates"]
    rest = [c for c in per_box.columns if c not in first]
    return per_box[[c for c in first if c in per_box.columns] + rest]


def score(
    maps: Mapping[str, np.ndarray],
    boxes: pd.DataFrame,
    image_sizes=None,
    *,
    policy: str = "wang2017",
    patients: Mapping[str, str] | None = None,
    probs: pd.DataFrame | None = None,
    labels: pd.DataFrame | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    allow_missing: bool = False,
    out_dir: str | os.PathLike | None = None,
    **policy_options,
) -> ScoreResult:
    """Score heatmaps against ground-truth boxes under one box policy.

    maps: key "<image id>::<label>" -> 2-D map (a `HeatmapBundle` or a dict); boxes: BOX_COLUMNS;
    image_sizes: dict id -> (h, w) or one int (default: the bundle's sizes). `policy`: a registered
    policy name (`wsl_bench.localize.policy_names()`). `policy_options`: see DEFAULT_OPTIONS (tau,
    components, sweep_size, ...) and the policy's own `options`. Every registered metric that is not
    built in adds its columns and summary keys (`wsl_bench.metrics.registry`). Writes per_box.csv
    and summary.json to `out_dir` when given.
    """
    with single_thread():
        return _score(maps, boxes, image_sizes, policy, patients, probs, labels, masks, seed, n_boot,
                      allow_missing, out_dir, policy_options)


def _score(maps, boxes, image_sizes, policy, patients, probs, labels, masks, seed, n_boot, allow_missing,
           out_dir, policy_options) -> ScoreResult:
    opts = resolve_options(policy, policy_options)
    boxes = check_boxes(boxes)
    if boxes.empty:
        raise ValueError("the box table is empty: there is nothing to score")
    size_of = _size_lookup(image_sizes, maps)
    sizes = np.array([size_of(i) for i in boxes["image_id"]], dtype=np.float64).reshape(-1, 2)
    _check_inside(boxes, sizes)
    if patients is not None:
        lost = [i for i in boxes["image_id"].unique() if i not in patients]
        if lost:
            raise ValueError(f"no patient id for {len(lost)} box image(s), e.g. {lost[0]!r}; add them to the labels table")
        boxes["patient_id"] = boxes["image_id"].map(patients).astype(str)
    else:  # unknown: the bootstrap then resamples images
        boxes["patient_id"] = pd.Series([None] * len(boxes), dtype=object)
    boxes["area_fraction"] = boxes["w"] * boxes["h"] / (sizes[:, 0] * sizes[:, 1])
    boxes["size_bin"] = size_bin(boxes["area_fraction"].to_numpy(), opts["size_bins"])
    boxes["key"] = [bundle_key(i, l) for i, l in zip(boxes["image_id"], boxes["label"])]
    dup = boxes.duplicated(["image_id", "label", "x", "y", "w", "h"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"boxes row {i}: duplicate of an earlier box ({boxes['key'][i]}); remove it")

    keys = boxes.pop("key").to_numpy()
    xyxy = xywh_to_xyxy(boxes[["x", "y", "w", "h"]].to_numpy())
    groups: dict[str, MapGroup] = {}
    image_ids, box_labels = boxes["image_id"].to_numpy(), boxes["label"].to_numpy()
    for key, idx in pd.Series(np.arange(len(boxes))).groupby(keys, sort=False):
        rows = idx.to_numpy()
        image_id, label = image_ids[rows[0]], box_labels[rows[0]]
        groups[key] = MapGroup(key, image_id, label, size_of(image_id), rows, xyxy[rows])
    missing = [k for k in groups if k not in maps]
    if missing and not allow_missing:
        i = int(groups[missing[0]].rows[0])
        raise ValueError(
            f"no heatmap for {len(missing)} ground-truth box map(s), e.g. key {missing[0]!r} (boxes row {i}); "
            f"add the maps, or pass allow_missing=True (--allow-missing) to count them as misses"
        )
    without_boxes = [k for k in maps if k not in groups]

    pol = get_policy(policy)
    plugged = plugged_metrics()
    summary_extra: dict = {}
    if pol.dataset_level:
        ctx = DatasetScoring(boxes, groups, maps, opts, patients, seed, masks, plugged)
        per_box, chosen = pol.score_dataset(ctx)
        summary_extra.update(chosen)
        summary_extra["_pxap"] = ctx.pxap()
    else:
        applied = pol.single_map(opts)
        scorer = BoxScorer(applied, opts, len(boxes), masks, plugged)
        _run(scorer, groups.values(), maps, opts, "scoring")
        per_box = scorer.compute(boxes)
        summary_extra["policy_detail"] = applied.describe()
        summary_extra["_pxap"] = scorer.pxap.compute() if scorer.pxap else None
    per_box = _finish_rows(per_box, opts)
    if plugged:  # the registered metrics' columns come last, in registry order
        added = [c for m in plugged for c in m.columns(opts)]
        per_box = per_box[[c for c in per_box.columns if c not in added] + added]

    summary = summarize_boxes(
        per_box,
        iou_thresholds=opts["iou_thresholds"],
        iobb_thresholds=opts["iobb_thresholds"],
        size_bins=opts["size_bins"],
        n_boot=n_boot,
        seed=seed,
    )
    pxap = summary_extra.pop("_pxap", None)
    summary.update(summary_extra)
    if pxap is not None:
        vals = [v for v in pxap.values() if math.isfinite(v)]
        summary["pxap"] = {**{k: (v if math.isfinite(v) else None) for k, v in pxap.items()},
                           "macro": float(np.mean(vals)) if vals else None}
    if probs is not None and labels is not None:
        from wsl_bench.metrics.classification import auroc_summary

        summary["auroc"] = auroc_summary(probs, labels, patients=patients, n_boot=n_boot, seed=seed)
    for m in plugged:
        entries = m.compute(per_box, opts) or {}
        stray = sorted(set(entries) - set(m.summary_keys))
        if stray:
            raise ValueError(f"metric {m.name!r} returned summary key(s) {stray} that its summary_keys do not declare")
        summary.update(entries)
    summary.update(
        policy=policy,
        policy_options=_jsonable_options(pol, opts),
        n_boxes=int(len(per_box)),
        n_images=int(per_box["image_id"].nunique()),
        n_maps_scored=int(len(per_box.loc[~per_box["missing"], ["image_id", "label"]].drop_duplicates())),
        n_missing=int(len(missing)),
        n_missing_boxes=int(per_box["missing"].sum()),
        missing_keys=sorted(missing)[:MAX_LISTED],
        n_maps_without_boxes=int(len(without_boxes)),
        maps_without_boxes_examples=sorted(without_boxes)[:MAX_LISTED],
        iou_thresholds=[float(t) for t in opts["iou_thresholds"]],
        iobb_thresholds=[float(t) for t in opts["iobb_thresholds"]],
        hit_rule="best-matching candidate strictly exceeds T",
    )
    result = ScoreResult(per_box=per_box, summary=summary)
    if out_dir is not None:
        write_result(result, out_dir)
    return result


def _jsonable_options(pol: Policy, opts: dict) -> dict:
    """summary["policy_options"]: the pixel-metric options, the policy's recorded ones, the size bins."""
    out = {}
    for k in ("pointing_tolerance", "miou_thresholds"):
        v = opts[k]
        out[k] = [float(x) for x in v] if isinstance(v, (tuple, list)) else v
    out.update(pol.recorded(opts))
    out["size_bins"] = [[n, float(lo), (None if math.isinf(hi) else float(hi))] for n, lo, hi in opts["size_bins"]]
    return out


_FORKED: tuple | None = None  # (function, chunks) handed to forked workers


def _call_forked(i: int):
    fn, chunks = _FORKED
    return fn(chunks[i])


def _n_workers(opts) -> int:
    n = int(opts.get("workers") or 0) or (os.cpu_count() or 1)
    return max(1, n)


def _chunked(fn, items: list, opts, desc: str) -> list:
    """[fn(chunk) for chunk in contiguous chunks of `items`], in order, in `workers` forked processes.

    Each map is scored independently and results are merged in item order, so the outcome does not
    depend on the worker count. Without fork (or for a few maps) it runs in this process.
    """
    n = _n_workers(opts)
    bar = _Progress(opts["progress"], len(items), desc)
    try:
        if n == 1 or len(items) < 4 * n or "fork" not in multiprocessing.get_all_start_methods():
            out = []
            for i in range(0, len(items), 16):
                out.append(fn(items[i : i + 16]))
                for _ in items[i : i + 16]:
                    bar.update()
            return out
        bounds = np.linspace(0, len(items), 8 * n + 1).astype(int)
        chunks = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        global _FORKED
        _FORKED = (fn, chunks)
        try:
            out = []
            with multiprocessing.get_context("fork").Pool(n) as pool:
                for chunk, res in zip(chunks, pool.imap(_call_forked, range(len(chunks)))):
                    out.append(res)
                    for _ in chunk:
                        bar.update()
            return out
        finally:
            _FORKED = None
    finally:
        bar.close()


def _run(scorer: BoxScorer, groups, maps, opts, desc, sweep=False, policies=None) -> dict:
    """Stream every map of `groups` through `scorer` (`policies`: label -> policy, else the
    scorer's); returns the sweeps (key -> arrays) if asked. Runs in `opts["workers"]` processes."""

    def work(chunk):
        part = BoxScorer(scorer.policy, scorer.opts, len(scorer.scored), scorer.masks, scorer.plugged)
        sweeps = {}
        for g in chunk:
            if policies is not None:
                part.policy = policies[g.label]
            sweeps[g.key] = part.accumulate(g, maps[g.key] if g.key in maps else None, sweep=sweep)
        rows = np.flatnonzero(part.scored)
        cols = {name: col[rows] for name, col in part.cols.items()}
        pxap = (part.pxap.pos, part.pxap.neg) if part.pxap is not None else None
        return rows, cols, pxap, sweeps

    out = {}
    for rows, cols, pxap, sweeps in _chunked(work, list(groups), opts, desc):
        scorer.scored[rows] = True
        for name, vals in cols.items():
            scorer.cols[name][rows] = vals
        if pxap is not None:
            for label in pxap[0]:
                scorer.pxap.pos[label] = scorer.pxap.pos.get(label, 0) + pxap[0][label]
                scorer.pxap.neg[label] = scorer.pxap.neg.get(label, 0) + pxap[1][label]
        out.update(sweeps)
    return out


def _sweep_only(groups, maps, opts, rules) -> dict:
    """Sweep results per key (calibration half: no pixel metrics), on the working grid if one is set."""
    k = len(opts["sweep_grid"])

    def work(chunk):
        out = {}
        for g in chunk:
            if g.key not in maps:
                out[g.key] = (np.zeros((len(rules), len(g.gt), k)), np.zeros((len(rules), len(g.gt), k)))
            else:
                heatmap = check_map(g.key, maps[g.key])
                size = working_size(g.size, opts["sweep_size"])
                grid = opts["sweep_grid"]
                if size == tuple(g.size):  # the upsampled map at the grid's levels, as BoxScorer's sweep
                    pm = prepare_map(heatmap, size)
                    pm.prefetch()
                    if pm.bounds is not None:
                        out[g.key] = sweep_overlaps(pm.u, True, g.gt, g.size, grid, rules,
                                                    source_shape=heatmap.shape, levels=pm.levels(grid),
                                                    source=pm.source)
                        continue
                    norm, inf = pm.norm, pm.informative
                else:
                    norm, inf = prepare(heatmap, size)
                out[g.key] = sweep_overlaps(norm, inf, g.gt, g.size, grid, rules, source_shape=heatmap.shape)
        return out

    out = {}
    for part in _chunked(work, list(groups), opts, "calibrating"):
        out.update(part)
    return out


@dataclass
class DatasetScoring:
    """What a dataset-level policy's `score_dataset` scores with (the protocol is
    `wsl_bench.localize.registry.DatasetScoring`): the boxes, their map groups, the options, and
    the scorer's streaming, sweeping and per-box tables. The PxAP of a run is the last scorer's."""

    boxes: pd.DataFrame
    groups: dict[str, MapGroup]
    maps: Mapping
    opts: dict
    patients: Mapping[str, str] | None
    seed: int
    masks: Mapping | None = None
    plugged: list[Metric] = field(default_factory=list)
    last: BoxScorer | None = None

    def sweep(self, groups, rules) -> dict:
        return _sweep_only(groups, self.maps, self.opts, rules)

    def scorer(self) -> BoxScorer:
        self.last = BoxScorer(None, self.opts, len(self.boxes), self.masks, self.plugged)
        return self.last

    def run(self, scorer: BoxScorer, groups, policies=None, sweep: bool = False, desc: str = "scoring") -> dict:
        return _run(scorer, groups, self.maps, self.opts, desc, sweep=sweep, policies=policies)

    def pxap(self) -> dict | None:
        return self.last.pxap.compute() if self.last is not None and self.last.pxap is not None else None


def write_result(result: ScoreResult, out_dir: str | os.PathLike) -> None:
    """Write per_box.csv and summary.json atomically into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_box.csv") as tmp:
        result.per_box.to_csv(tmp, index=False)
    write_json(out / "summary.json", result.summary)
