"""`wsl_bench.score`: score heatmaps from Python (a training loop, a notebook) in one call.

A thin front to `wsl_bench.metrics.score` that takes maps in the forms a training loop has at hand
(a dict keyed "<image id>::<label>", an `(image_ids, labels, array)` triple, or a bundle path) and
boxes as a table or a box file, and checks them with errors that say what to change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from wsl_bench.heatmaps import KEY_SEP, HeatmapBundle, bundle_key, read_bundle, split_key
from wsl_bench.metrics.evaluator import ScoreResult
from wsl_bench.metrics.evaluator import score as _score


def _array(x, what: str) -> np.ndarray:
    """A numpy array of a numpy array, a list or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: cannot read it as an array ({exc})") from None


def _keyed(maps: Mapping) -> dict[str, np.ndarray]:
    """Keys checked and written as `bundle_key` writes them (box-file label spelling)."""
    out: dict[str, np.ndarray] = {}
    first: dict[str, str] = {}
    for key, m in maps.items():
        try:
            image_id, label = split_key(key)
            norm = bundle_key(image_id, label)
        except ValueError:
            raise ValueError(
                f"maps key {key!r} is not of the form '<image id>{KEY_SEP}<finding label>' (e.g. "
                f"'00000003_000.png{KEY_SEP}Mass'); make keys with wsl_bench.heatmaps.bundle_key(image_id, label), "
                f"or pass maps as (image_ids, labels, array)"
            ) from None
        if norm in out:
            raise ValueError(f"maps keys {first[norm]!r} and {key!r} name the same map ({norm!r}); keep one")
        first[norm] = key
        out[norm] = _array(m, f"maps[{key!r}]")
    return out


def _from_triple(image_ids, labels, array) -> dict[str, np.ndarray]:
    """{key: map} from image ids, labels and an array [N, h, w] (one label per map, or one for all)
    or [N, L, h, w] (channel j is class labels[j], as a method's `explain` returns)."""
    a = _array(array, "maps array")
    ids = [str(i) for i in (image_ids.tolist() if hasattr(image_ids, "tolist") else image_ids)]
    if a.ndim not in (3, 4) or a.shape[0] != len(ids):
        raise ValueError(f"maps array has shape {tuple(a.shape)}; expected [N, h, w] or [N, L, h, w] with N = "
                         f"{len(ids)} (one row per image id)")
    if isinstance(labels, str):
        labels = [labels]
    labels = [str(lab) for lab in labels]
    if a.ndim == 3:
        if len(labels) == 1:
            labels = labels * len(ids)
        if len(labels) != len(ids):
            raise ValueError(f"{len(labels)} labels for {len(ids)} maps of shape [N, h, w]; give one label per map, "
                             f"or one for all")
        pairs = [(i, lab, a[n]) for n, (i, lab) in enumerate(zip(ids, labels))]
    else:
        if len(labels) != a.shape[1]:
            raise ValueError(f"{len(labels)} labels for maps of shape {tuple(a.shape)}; an [N, L, h, w] array needs "
                             f"L = {a.shape[1]} labels, the class of each channel")
        pairs = [(i, lab, a[n, j]) for n, i in enumerate(ids) for j, lab in enumerate(labels)]
    out: dict[str, np.ndarray] = {}
    for i, lab, m in pairs:
        key = bundle_key(i, lab)
        if key in out:
            raise ValueError(f"image id {i!r} with label {lab!r} appears twice among the maps; keep one")
        out[key] = m
    return out


def _maps(maps) -> Mapping[str, np.ndarray]:
    if isinstance(maps, HeatmapBundle):
        return maps
    if isinstance(maps, (str, os.PathLike)):
        return read_bundle(maps)
    if isinstance(maps, Mapping):
        return _keyed(maps)
    if isinstance(maps, Sequence) and len(maps) == 3:
        return _from_triple(*maps)
    raise ValueError(
        f"maps must be a dict keyed '<image id>{KEY_SEP}<finding label>', an (image_ids, labels, array) triple, or "
        f"the path of a heatmap bundle (.npz); got {type(maps).__name__}"
    )


def _boxes(boxes) -> pd.DataFrame:
    if isinstance(boxes, pd.DataFrame):
        return boxes
    if isinstance(boxes, (str, os.PathLike)):
        from wsl_bench.metrics.readers import read_bbox_csv

        return read_bbox_csv(boxes)
    raise ValueError(f"boxes must be a DataFrame (image_id, label, x, y, w, h) or the path of a box csv "
                     f"(NIH BBox_List_2017 format); got {type(boxes).__name__}")


def score_maps(maps, boxes, image_sizes=None, *, policy: str = "wang2017", **kwargs) -> ScoreResult:
    """Score heatmaps against ground-truth boxes; returns the `ScoreResult` (`.per_box`, `.summary`).

    maps: a dict "<image id>::<label>" -> 2-D map (numpy or torch), an ``(image_ids, labels, array)``
    triple (array [N, h, w] with one label per map, or [N, L, h, w] with the L class labels of its
    channels), or a bundle path. boxes: a DataFrame (image_id, label, x, y, w, h in image pixels) or
    a box csv path. image_sizes: image id -> (h, w), or one int for square images (default: the
    bundle's). Every other keyword is `wsl_bench.metrics.score`'s (policy options, patients, masks,
    n_boot, seed, out_dir, ...).
    """
    return _score(_maps(maps), _boxes(boxes), image_sizes, policy=policy, **kwargs)
