"""The ``calibrated`` policy: tau and the component rule chosen per class on a calibration split.

The box images are split patient-disjointly (`calibration_split`); on the calibration half every
class's (rule, tau) maximising the mean IoU accuracy over the IoU thresholds is chosen from the
sweep grid and frozen; the other half is scored with it as a ``threshold`` policy per class.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from wsl_bench.localize.policies import COMPONENT_RULES, SWEEP_GRID, BoxPolicy, threshold
from wsl_bench.localize.registry import ChosenSetting, Policy, PolicyTable, register_policy


def calibration_split(image_ids, patients: Mapping[str, str] | None, fraction: float, seed: int):
    """Patient-disjoint split of the box images: (calibration ids, evaluation ids).

    Units (patients, or images without patient ids) are shuffled with `seed` and taken into the
    calibration half until it holds `fraction` of the images.
    """
    ids = sorted(set(image_ids))
    unit_of = {i: (patients[i] if patients is not None else i) for i in ids}
    units = sorted(set(unit_of.values()))
    per_unit: dict[str, list[str]] = {}
    for i in ids:
        per_unit.setdefault(unit_of[i], []).append(i)
    order = np.random.default_rng(seed).permutation(len(units))
    target = fraction * len(ids)
    calib: list[str] = []
    for j in order:
        if len(calib) >= target:
            break
        calib.extend(per_unit[units[j]])
    calib_set = set(calib)
    return sorted(calib_set), [i for i in ids if i not in calib_set]


def choose_tau(iou: np.ndarray, iou_thresholds) -> tuple[int, int, float]:
    """Pick (rule index, tau index) maximising the mean IoU accuracy over `iou_thresholds`.

    iou: [R, m, K]. Ties go to the first rule in COMPONENT_RULES order, then the lowest tau.
    """
    t = np.asarray(iou_thresholds, dtype=np.float64)
    acc = (iou[..., None] > t).mean(axis=(1, 3))  # [R, K]
    flat = int(np.argmax(acc))
    r, k = np.unravel_index(flat, acc.shape)
    return int(r), int(k), float(acc[r, k])


@register_policy
class Calibrated(Policy):
    """Per-class tau and component rule frozen on a patient-disjoint calibration half."""

    name = "calibrated"
    description = "tau and component rule per class, chosen on a patient-disjoint calibration half and frozen"
    options = {"tau": 0.5, "components": None, "calibration_fraction": 0.5, "sweep_grid": SWEEP_GRID, "sweep_size": 0}
    recorded_options = ("components", "calibration_fraction", "sweep_size", "tau", "sweep_grid")
    dataset_level = True
    summary_keys = ("calibration",)
    per_box_columns = ("tau", "components")
    report_table = PolicyTable(
        "calibration", "Calibrated box thresholds",
        "τ on the [0, 1]-normalised map and component rule per class, chosen on the patient-disjoint "
        "calibration half of the box images and frozen for the other half († no calibration box: the "
        "default τ).")

    def score_dataset(self, ctx):
        opts, groups, patients, seed = ctx.opts, ctx.groups, ctx.patients, ctx.seed
        image_ids = [g.image_id for g in groups.values()]
        calib_ids, eval_ids = calibration_split(image_ids, patients, opts["calibration_fraction"], seed)
        if not calib_ids or not eval_ids:
            raise ValueError(
                f"the calibrated policy needs box images from at least 2 {'patients' if patients else 'images'} "
                f"to split them into calibration and evaluation halves"
            )
        calib_set = set(calib_ids)
        calib_groups = [g for g in groups.values() if g.image_id in calib_set]
        eval_groups = [g for g in groups.values() if g.image_id not in calib_set]
        rules = (opts["components"],) if opts["components"] else COMPONENT_RULES
        sweeps = ctx.sweep(calib_groups, rules)
        grid = list(opts["sweep_grid"])
        by_label: dict[str, list[np.ndarray]] = {}
        for g in calib_groups:
            by_label.setdefault(g.label, []).append(sweeps[g.key][0])
        chosen = {}
        for label in sorted({g.label for g in groups.values()}):
            if label in by_label:
                iou = np.concatenate(by_label[label], axis=1)
                r, k, obj = choose_tau(iou, opts["iou_thresholds"])
                chosen[label] = {"tau": float(grid[k]), "components": rules[r], "objective": obj,
                                 "n_calibration_boxes": int(iou.shape[1]), "fallback": False}
            else:
                chosen[label] = {"tau": float(opts["tau"]), "components": opts["components"] or "all",
                                 "objective": None, "n_calibration_boxes": 0, "fallback": True}
        policies = {lab: threshold(c["tau"], c["components"]) for lab, c in chosen.items()}
        scorer = ctx.scorer()
        ctx.run(scorer, eval_groups, policies=policies)
        per_box = scorer.compute(ctx.boxes)
        per_box["tau"] = per_box["label"].map({l: c["tau"] for l, c in chosen.items()}).astype(float)
        per_box["components"] = per_box["label"].map({l: c["components"] for l, c in chosen.items()})
        extra = {
            "calibration": {
                "thresholds": chosen,
                "objective": "mean IoU accuracy over iou_thresholds on the calibration half",
                "unit": "patient" if patients is not None else "image",
                "fraction": float(opts["calibration_fraction"]),
                "seed": int(seed),
                "sweep_size": opts["sweep_size"],
                "calibration_images": calib_ids,
                "evaluation_images": eval_ids,
                "n_calibration_images": len(calib_ids),
                "n_evaluation_images": len(eval_ids),
            },
        }
        return per_box, extra

    def from_summary(self, summary, label) -> BoxPolicy:
        chosen = summary.get("calibration", {}).get("thresholds", {}).get(label)
        if chosen is None:
            raise KeyError(f"summary.json has no calibrated threshold for {label!r}")
        return threshold(float(chosen["tau"]), chosen.get("components") or "all")

    def chosen(self, summary) -> list[ChosenSetting]:
        rows = []
        for label, c in (summary.get("calibration", {}).get("thresholds") or {}).items():
            fallback = bool(c.get("fallback"))
            rows.append(ChosenSetting(label, float(c["tau"]),
                                      {"components": c.get("components"), "fallback": fallback,
                                       "n_calibration_boxes": int(c.get("n_calibration_boxes", 0))},
                                      f" ({c.get('components')})" + (" †" if fallback else "")))
        return rows
