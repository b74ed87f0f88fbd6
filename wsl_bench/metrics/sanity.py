"""Sanity instruments: is a method's map class-specific, tied to its prior, better than a guess?

Computed from the bundle, the image sizes and the scored per-box table (plus, where a run has them,
the references' per-box tables, their maps and the model-randomisation correlations), and written to
`summary.json["sanity"]`. Rank (Spearman) correlation throughout: it compares where a map puts its
evidence, whatever monotone scale a method's scores live on (logits, probabilities, gradients), which is
also what thresholding a min-max-normalised map looks at. The class-map and randomisation correlations
leave out a method's shared floor (`shared_floor`: what it imposes on every map). docs/scoring.md
documents every rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from wsl_bench.heatmaps import bundle_key
from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.metrics.aggregate import tkey
from wsl_bench.metrics.bootstrap import KEY_COLUMNS, grouped_replicates, percentile_ci, resample_counts, unit_codes
from wsl_bench.references import CEILING_REFERENCES, GUESS_REFERENCES, PRIOR_MAP_REFERENCES

CHANCE = 1.0 / len(BOX_FINDINGS)
TIE_TOLERANCE = 1e-9  # relative: masses this close count as a tie (identical maps give exact ties)
INSTRUMENTS_VERSION = 4  # in the randomisation and score stage keys: a changed instrument redoes them on resume
MAX_GRID = 256  # maps finer than this (longer side) are area-averaged to it first: bounded time and memory


def role_of(name: str) -> str:
    """'guess', 'ceiling' or 'method' for a (registry) method name."""
    return "guess" if name in GUESS_REFERENCES else "ceiling" if name in CEILING_REFERENCES else "method"


# ---------------------------------------------------------------------------------------------------
# small numerical pieces
# ---------------------------------------------------------------------------------------------------


def _ranks(a: np.ndarray) -> np.ndarray | None:
    """Centred, unit-norm ranks of a flattened map; None for a constant map (no ordering to compare)."""
    _, inverse, counts = np.unique(np.asarray(a, dtype=np.float64).ravel(), return_inverse=True, return_counts=True)
    r = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average ranks (ties share their mean rank)
    r -= r.mean()
    norm = np.sqrt(np.dot(r, r))
    return None if norm == 0 else r / norm


def shared_floor(maps: Iterable[np.ndarray]) -> np.ndarray:
    """Cells that every one of `maps` (one shape) holds at its own minimum: structure imposed on all of them.

    Given the maps of many images, a zeroed border margin or a fixed mask floor survives, while cells a
    map leaves at zero by chance (ReLU) do not; counting the imposed cells makes independent maps look
    alike (docs/scoring.md). A flat map holds every cell at its minimum; a map with a non-finite value
    says nothing about a floor and is passed over (no floor when every map is).
    """
    floor, shape = None, None
    for m in maps:
        m = np.asarray(m, dtype=np.float64)
        shape = m.shape
        if not np.isfinite(m).all():
            continue
        lo = m.min()
        at_min = m <= lo + TIE_TOLERANCE * float(m.max() - lo)  # relative to the map's range: exact for a flat map
        floor = at_min if floor is None else floor & at_min
    if shape is None:
        raise ValueError("shared_floor needs at least one map")
    return np.zeros(shape, dtype=bool) if floor is None else floor


def rank_correlation(a: np.ndarray, b: np.ndarray, *, floor: np.ndarray | None = None) -> float:
    """Spearman correlation of two same-shape maps; two constant maps are identical (1), one constant 0.

    `floor`: cells left out (a boolean mask, e.g. `shared_floor` of every map the comparison belongs to).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if floor is not None and not np.all(floor):
        a, b = a[~floor], b[~floor]
    ra, rb = _ranks(a), _ranks(b)
    if ra is None or rb is None:
        return 1.0 if ra is None and rb is None else 0.0
    return float(np.clip(np.dot(ra, rb), -1.0, 1.0))


def mean_pairwise_correlation(maps: Sequence[np.ndarray], *, floor: np.ndarray | None = None) -> float:
    """Mean Spearman correlation over the pairs of `maps` (all of one shape), the `floor` cells left out.

    A flat map against a varying one counts 0; pairs of two flat maps are skipped; all maps flat is 1.
    """
    n = len(maps)
    if n < 2:
        return float("nan")
    keep = None if floor is None or np.all(floor) else ~np.asarray(floor, dtype=bool)
    ranks = [_ranks(m if keep is None else np.asarray(m)[keep]) for m in maps]
    constant = np.array([r is None for r in ranks])
    if constant.all():
        return 1.0  # one (flat) map for every class
    size = next(r.size for r in ranks if r is not None)
    stack = np.stack([np.zeros(size) if r is None else r for r in ranks])
    corr = np.clip(stack @ stack.T, -1.0, 1.0)  # a constant map against a varying one: 0
    iu = np.triu_indices(n, k=1)
    defined = ~(constant[iu[0]] & constant[iu[1]])  # two flat maps say nothing about each other: skipped
    return float(corr[iu][defined].mean())


def resize_map(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average (down) or bilinear (up) resize of a 2-D map, for comparing maps of different grids."""
    from skimage.transform import resize

    a = np.asarray(a, dtype=np.float64)
    if a.shape == tuple(shape):
        return a
    down = shape[0] < a.shape[0] or shape[1] < a.shape[1]
    return resize(a, shape, order=1, anti_aliasing=down, mode="edge", preserve_range=True)


def coarse(a: np.ndarray, max_side: int = MAX_GRID) -> np.ndarray:
    """A map as float32 on a grid of at most `max_side` cells a side (area average when finer)."""
    a = np.asarray(a, dtype=np.float32)
    side = max(a.shape)
    if side <= max_side:
        return a
    shape = tuple(max(1, round(n * max_side / side)) for n in a.shape)
    return resize_map(a, shape).astype(np.float32)


def _coverage(lo: float, hi: float, n_cells: int, extent: float) -> np.ndarray:
    """Fraction of each of `n_cells` grid cells (over [0, extent]) that the interval [lo, hi] covers."""
    edges = np.linspace(0.0, extent, n_cells + 1)
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None) / (extent / n_cells)


def box_mass(heatmap: np.ndarray, box_xywh, image_size: tuple[int, int]) -> float:
    """Share of a map's mass (after subtracting its minimum) inside a box, on the map's own grid.

    The map covers the image (h x w pixels); each grid cell counts with the fraction of it the box
    covers. A constant map spreads its mass evenly, so it gets the box's area fraction.
    """
    m = np.asarray(heatmap, dtype=np.float64)
    m = m - m.min()
    h, w = image_size
    x, y, bw, bh = (float(v) for v in box_xywh)
    wx = _coverage(x, x + bw, m.shape[1], float(w))
    wy = _coverage(y, y + bh, m.shape[0], float(h))
    total = m.sum()
    if total <= 0:
        return float(wy.sum() * wx.sum() / (m.shape[0] * m.shape[1]))
    return float(wy @ m @ wx / total)


def box_masses(maps: Sequence[np.ndarray], box_xywh, image_size: tuple[int, int]) -> np.ndarray:
    """`box_mass` of each map (one batched product when the maps share a grid)."""
    if len({np.shape(m) for m in maps}) != 1:
        return np.array([box_mass(m, box_xywh, image_size) for m in maps])
    m = np.stack([np.asarray(a, dtype=np.float64) for a in maps])
    m = m - m.min(axis=(1, 2), keepdims=True)
    h, w = image_size
    x, y, bw, bh = (float(v) for v in box_xywh)
    wx = _coverage(x, x + bw, m.shape[2], float(w))
    wy = _coverage(y, y + bh, m.shape[1], float(h))
    total = m.sum(axis=(1, 2))
    inside = np.einsum("i,cij,j->c", wy, m, wx)
    uniform = wy.sum() * wx.sum() / (m.shape[1] * m.shape[2])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), uniform)


def right_class_credit(masses: np.ndarray, own: int) -> float:
    """1/|ties| if the own class's mass is (tied for) the largest, else 0: chance is 1/len(masses)."""
    top = masses.max()
    tied = masses >= top - TIE_TOLERANCE * max(1.0, abs(top))
    return float(tied[own]) / float(tied.sum())


def _unit_mean(values: np.ndarray, units: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean of per-row values with a 95% bootstrap CI over units (patients, else images)."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        return {"mean": None, "ci": [None, None]}
    values, units = values[ok], units[ok]
    codes = pd.factorize(units)[0]
    n_units = int(codes.max()) + 1
    s = np.bincount(codes, weights=values, minlength=n_units)
    n = np.bincount(codes, minlength=n_units).astype(np.float64)
    mean = float(values.mean())
    if n_boot <= 0:
        return {"mean": mean, "ci": [None, None]}
    counts = resample_counts(n_units, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (counts @ s) / (counts @ n)
    lo, hi = percentile_ci(reps[:, None])
    return {"mean": mean, "ci": [float(lo[0]), float(hi[0])]}


def _image_units(per_box: pd.DataFrame) -> dict[str, str]:
    """image id -> bootstrap unit (its patient where the scorer knew it, else the image)."""
    if "patient_id" not in per_box.columns:
        return {i: i for i in per_box["image_id"]}
    pid = per_box["patient_id"].where(per_box["patient_id"].notna(), per_box["image_id"]).astype(str)
    return dict(zip(per_box["image_id"], pid))


# ---------------------------------------------------------------------------------------------------
# the instruments
# ---------------------------------------------------------------------------------------------------


def class_specificity(
    maps: Mapping[str, np.ndarray],
    per_box: pd.DataFrame,
    size_of: Callable[[str], tuple[int, int]],
    *,
    labels: Sequence[str] = BOX_FINDINGS,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Class-map correlation per box image and right-class rate per box (see the module docstring).

    An image whose bundle lacks any of the `labels` maps is not computed (counted, never guessed).
    """
    labels = list(labels)
    units = _image_units(per_box)
    image_ids = list(dict.fromkeys(per_box["image_id"]))
    complete: dict[str, list[np.ndarray]] = {}
    for image_id in image_ids:
        keys = [bundle_key(image_id, lab) for lab in labels]
        if all(k in maps for k in keys):
            complete[image_id] = [np.asarray(maps[k], dtype=np.float64) for k in keys]
    n_missing = len(image_ids) - len(complete)
    reason = None
    if n_missing:
        reason = (f"{n_missing} of {len(image_ids)} box image(s) lack a map of some of the {len(labels)} box findings; "
                  f"class specificity needs every finding's map of an image")
    if not complete:
        return {"n_images": 0, "n_images_not_computed": n_missing, "not_computed_reason": reason,
                "class_correlation": None, "right_class_rate": None}

    corr_ids = list(complete)
    same_grid = {i: complete[i] if len({m.shape for m in complete[i]}) == 1
                 else [resize_map(m, complete[i][0].shape) for m in complete[i]] for i in corr_ids}
    floors = {shape: shared_floor(m for i in corr_ids for m in same_grid[i] if m.shape == shape)
              for shape in {same_grid[i][0].shape for i in corr_ids}}  # imposed on every map of every image
    corr = np.array([mean_pairwise_correlation(same_grid[i], floor=floors[same_grid[i][0].shape]) for i in corr_ids])
    class_corr = _unit_mean(corr, np.array([units[i] for i in corr_ids]), n_boot, seed)
    class_corr["floor_share"] = float(np.mean([floors[same_grid[i][0].shape].mean() for i in corr_ids]))

    label_index = {lab: j for j, lab in enumerate(labels)}
    credit = np.full(len(per_box), np.nan)
    for r, row in enumerate(per_box[["image_id", "label", "x", "y", "w", "h"]].itertuples(index=False)):
        image_maps = complete.get(row.image_id)
        if image_maps is None or row.label not in label_index:
            continue
        masses = box_masses(image_maps, (row.x, row.y, row.w, row.h), size_of(row.image_id))
        credit[r] = right_class_credit(masses, label_index[row.label])
    ok = np.isfinite(credit)
    rate = None
    if ok.any():
        sub = per_box.loc[ok]
        present = sorted(set(sub["label"]), key=labels.index)
        classes = sub["label"].map({lab: j for j, lab in enumerate(present)}).to_numpy()
        unit_ids = unit_codes(sub)
        n_units = int(unit_ids.max()) + 1
        point_pc, point_macro, _ = grouped_replicates(credit[ok], unit_ids, classes, len(present), np.ones((1, n_units)))
        reps_pc, reps_macro, _ = grouped_replicates(credit[ok], unit_ids, classes, len(present),
                                                    resample_counts(n_units, n_boot, seed))
        lo_pc, hi_pc = percentile_ci(reps_pc[:, :, 0]) if n_boot > 0 else (np.full(len(present), np.nan),) * 2
        lo_m, hi_m = percentile_ci(reps_macro[:, 0:1]) if n_boot > 0 else (np.array([np.nan]),) * 2
        counts = sub["label"].value_counts()
        rate = {
            "chance": CHANCE,
            "n_boxes": int(ok.sum()),
            "n_boxes_not_computed": int((~ok).sum()),
            "macro": {"rate": float(point_macro[0, 0]), "ci": _pair(lo_m[0], hi_m[0])},
            "per_class": {lab: {"rate": float(point_pc[0, j, 0]), "ci": _pair(lo_pc[j], hi_pc[j]),
                                "n_boxes": int(counts[lab])} for j, lab in enumerate(present)},
        }
    return {"n_images": len(complete), "n_images_not_computed": n_missing, "not_computed_reason": reason,
            "class_correlation": class_corr, "right_class_rate": rate}


def _pair(lo, hi) -> list:
    return [None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi)]


def prior_correlation(
    maps: Mapping[str, np.ndarray],
    per_box: pd.DataFrame,
    prior_maps: Mapping[str, np.ndarray],
    *,
    labels: Sequence[str] = BOX_FINDINGS,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean rank correlation of each box image's maps with each image-independent prior map.

    The prior is resampled onto the method's grid. Per image: the mean over the findings it has maps
    of; then the mean over images, with a bootstrap CI over patients.
    """
    units = _image_units(per_box)
    image_ids = list(dict.fromkeys(per_box["image_id"]))
    out = {}
    for name, prior in prior_maps.items():
        prior = np.asarray(prior, dtype=np.float64)
        prior_ranks: dict[tuple[int, int], np.ndarray | None] = {}
        per_image = []
        for image_id in image_ids:
            vals = []
            for lab in labels:
                key = bundle_key(image_id, lab)
                if key not in maps:
                    continue
                m = np.asarray(maps[key], dtype=np.float64)
                if m.shape not in prior_ranks:
                    prior_ranks[m.shape] = _ranks(resize_map(prior, m.shape))
                rm, rp = _ranks(m), prior_ranks[m.shape]
                vals.append((1.0 if rm is None and rp is None else 0.0) if rm is None or rp is None
                            else float(np.dot(rm, rp)))
            per_image.append(np.mean(vals) if vals else np.nan)
        out[name] = _unit_mean(np.array(per_image), np.array([units[i] for i in image_ids]), n_boot, seed)
    return out


def gain_over_guess(
    per_box: pd.DataFrame,
    references: Mapping[str, pd.DataFrame],
    *,
    iou_thresholds: Sequence[float],
    size_bins: Sequence[str] = ("small", "medium", "large"),
    n_boot: int = 1000,
    seed: int = 0,
) -> dict | None:
    """IoU accuracy minus the best reference's, per T(IoU), for macro, each class and each size bin.

    The best reference is chosen per cell (highest point accuracy; ties to the first named). The
    difference gets a paired patient bootstrap CI and two-sided p-value over the same boxes, with the
    replicates `paired_bootstrap` would draw (one draw shared by every cell, so it stays cheap).
    """
    order = {n: i for i, n in enumerate(GUESS_REFERENCES)}  # one tie order wherever scoring runs
    names = sorted((n for n, r in references.items() if r is not None and len(r)), key=lambda n: order.get(n, len(order)))
    refs = {n: references[n] for n in names}
    if not refs:
        return None
    keys = list(KEY_COLUMNS)
    index = pd.MultiIndex.from_frame(per_box[keys])
    aligned = {}
    for name, ref in refs.items():
        r = ref.set_index(keys)
        if len(r) != len(per_box) or not index.isin(r.index).all():
            raise ValueError(f"the per-box tables of this method and of {name!r} differ; a paired test needs the same boxes")
        aligned[name] = r.reindex(index)
    present = [lab for lab in BOX_FINDINGS if lab in set(per_box["label"])]
    labels = present + sorted(set(per_box["label"]) - set(present))
    classes = per_box["label"].map({lab: j for j, lab in enumerate(labels)}).to_numpy()
    units = unit_codes(per_box)
    n_units = int(units.max()) + 1
    counts = resample_counts(n_units, n_boot, seed)
    ones = np.ones((1, n_units))
    bins = per_box["size_bin"].to_numpy() if "size_bin" in per_box.columns else np.full(len(per_box), None)
    names = list(aligned)
    rows = []
    for t in iou_thresholds:
        col = f"iou_hit_{float(t):g}"
        values = np.stack([per_box[col].to_numpy(dtype=np.float64)]
                          + [aligned[n][col].to_numpy(dtype=np.float64) for n in names], axis=1)
        scopes = [("macro", "macro", values)]
        scopes += [("size_bin", b, np.where((bins == b)[:, None], values, np.nan)) for b in size_bins if (bins == b).any()]
        for scope, label, vals in scopes:
            point = grouped_replicates(vals, units, classes, len(labels), ones)
            reps = grouped_replicates(vals, units, classes, len(labels), counts)
            if scope == "macro":
                cells = [("macro", "macro", point[1][0], reps[1], int(np.isfinite(vals[:, 0]).sum()))]
                cells += [("class", lab, point[0][0, j], reps[0][:, j], int((classes == j).sum()))
                          for j, lab in enumerate(labels)]
            else:
                cells = [(scope, label, point[1][0], reps[1], int(np.isfinite(vals[:, 0]).sum()))]
            for sc, lab, pt, rp, n in cells:
                rows.append(_gain_row(sc, lab, tkey(t), pt, rp, names, n))
    return {"references": names, "rows": rows,
            "rule": "best reference per cell (highest accuracy); paired patient bootstrap, two-sided p"}


def _gain_row(scope: str, label: str, t: str, point: np.ndarray, reps: np.ndarray, names: list[str], n: int) -> dict:
    """One cell: column 0 is the method, columns 1.. the references (point [1+R], replicates [B, 1+R])."""
    ref_pts = np.where(np.isfinite(point[1:]), point[1:], -np.inf)
    best = int(np.argmax(ref_pts))
    diff = reps[:, 0] - reps[:, 1 + best]
    diff = diff[np.isfinite(diff)]
    if diff.size:
        lo, hi = percentile_ci(diff[:, None])
        ci = [float(lo[0]), float(hi[0])]
        p = float(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))
    else:
        ci, p = [None, None], None
    return {"scope": scope, "label": label, "threshold": t, "method": float(point[0]),
            "best_reference": names[best], "reference": float(point[1 + best]),
            "diff": float(point[0] - point[1 + best]), "ci": ci, "p_value": p, "n_boxes": n}


def randomization_summary(record: Mapping | None, per_box: pd.DataFrame | None = None, *, n_boot: int = 1000,
                          seed: int = 0, skipped: str | None = None) -> dict:
    """Summarise `randomization_record` output (per image × depth correlations) with bootstrap CIs."""
    if record is None:
        return {"status": "skipped", "reason": skipped or "not computed", "n_images": 0, "depths": []}
    corr = np.asarray(record["correlation"], dtype=np.float64)  # [n_images, n_depths]
    ids = list(record["image_ids"])
    units_of = _image_units(per_box) if per_box is not None else {}
    units = np.array([units_of.get(i, i) for i in ids])
    share = np.asarray(record.get("floor_share", np.full(corr.shape, np.nan)), dtype=np.float64)
    depths = []
    for j, d in enumerate(record["depths"]):
        floor = float(share[:, j].mean()) if np.isfinite(share[:, j]).all() else None
        depths.append({**d, **_unit_mean(corr[:, j], units, n_boot, seed), "floor_share": floor})
    return {"status": "computed", "reason": None, "n_images": len(ids), "depths": depths,
            "correlation": "spearman", "floor": record.get("floor", "none"), "seed": record.get("seed")}


def sanity_summary(
    maps: Mapping[str, np.ndarray],
    per_box: pd.DataFrame,
    size_of: Callable[[str], tuple[int, int]],
    *,
    iou_thresholds: Sequence[float],
    name: str | None = None,
    references: Mapping[str, pd.DataFrame] | None = None,
    prior_maps: Mapping[str, np.ndarray] | None = None,
    randomization: Mapping | None = None,
    randomization_skipped: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Every instrument for one method's scored bundle: the `summary.json["sanity"]` entry."""
    role = role_of(name or "")
    others = {n: r for n, r in (references or {}).items() if n != name}
    wanted = {bundle_key(i, lab) for i in set(per_box["image_id"]) for lab in BOX_FINDINGS}
    maps = {k: coarse(maps[k]) for k in wanted if k in maps}  # read each map of the bundle once
    return {
        "correlation": "spearman",
        "role": role,
        "class_specificity": class_specificity(maps, per_box, size_of, n_boot=n_boot, seed=seed),
        "prior_correlation": prior_correlation(maps, per_box, prior_maps or {}, n_boot=n_boot, seed=seed),
        "gain_over_guess": gain_over_guess(per_box, others, iou_thresholds=iou_thresholds, n_boot=n_boot, seed=seed),
        "randomization": randomization_summary(randomization, per_box, n_boot=n_boot, seed=seed,
                                               skipped=randomization_skipped),
    }


def guess_references_for(boxes: pd.DataFrame, image_sizes, *, policy: str, patients=None, seed: int = 0,
                         **policy_options) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Score the image-independent priors on the same boxes: (per-box tables, prior maps).

    For bundles scored outside a run (`wsl-bench score`): `prior-center` and `prior-lung` (the real
    lung-mask atlas) need no pixels, so their scores under the same policy are exact references.
    """
    from wsl_bench.methods import create_method
    from wsl_bench.metrics.evaluator import score

    per_box, prior_maps = {}, {}
    keys = {bundle_key(i, lab) for i, lab in zip(boxes["image_id"], boxes["label"])}
    for name in PRIOR_MAP_REFERENCES:
        prior = np.asarray(create_method(name).prior_map, dtype=np.float32)
        prior_maps[name] = prior
        result = score({k: prior for k in keys}, boxes.copy(), image_sizes, policy=policy, patients=patients,
                       seed=seed, n_boot=0, **policy_options)
        per_box[name] = result.per_box
    return per_box, prior_maps


def standalone_sanity(maps, result, boxes: pd.DataFrame, image_sizes, *, policy: str, patients=None, seed: int = 0,
                      n_boot: int = 1000, **policy_options) -> dict:
    """The sanity entry for a bundle from another tool: priors scored on the same boxes, no randomisation."""
    refs, prior_maps = guess_references_for(boxes, image_sizes, policy=policy, patients=patients, seed=seed,
                                            **policy_options)
    if isinstance(image_sizes, (int, np.integer)):
        n = int(image_sizes)
        size_of = lambda image_id: (n, n)  # noqa: E731
    else:
        size_of = lambda image_id: tuple(int(v) for v in image_sizes[image_id])  # noqa: E731
    return sanity_summary(
        maps, result.per_box, size_of, iou_thresholds=result.summary["iou_thresholds"], references=refs,
        prior_maps=prior_maps, randomization_skipped="bundle scored outside a run: no method to re-initialise "
        "(run the method with `wsl-bench run` for the randomisation test)", n_boot=n_boot, seed=seed,
    )
