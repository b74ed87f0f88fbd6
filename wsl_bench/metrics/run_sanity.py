"""The sanity instruments inside a run folder: the randomisation stage and each method's sanity summary.

`wsl_bench.run` calls these; they read and write only the run folder (`heatmaps/`, `scores/`,
`checkpoints/`) through the `Run` object handed to them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsl_bench.io import sha256_file, write_json
from wsl_bench.labels import BOX_FINDING_INDICES
from wsl_bench.methods import create_method, get_method_info
from wsl_bench.metrics.sanity import GUESS_REFERENCES, PRIOR_MAP_REFERENCES, sanity_summary

SANITY_KEYS = ("sanity", "sanity_images")
RANDOMIZATION_SUFFIX = ".randomization.json"


def randomization_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "heatmaps" / f"{name}{RANDOMIZATION_SUFFIX}"


def wants_randomization(config: dict[str, Any], name: str) -> bool:
    """The test runs for trainable methods when `score.sanity` is on (references look at no weights)."""
    if not config["score"].get("sanity", True):
        return False
    return bool(get_method_info(config["methods"][name]["registry"]).cls.trainable)


def sample_box_images(test, n: int, seed: int) -> np.ndarray:
    """`n` box images of the test split (a seeded draw, in test order), the randomisation test's sample."""
    box = test.box_image_indices()
    if len(box) <= n:
        return box
    pick = np.random.default_rng(seed).choice(len(box), size=n, replace=False)
    return box[np.sort(pick)]


def randomization_stage(run, cohort, name: str, key: str) -> None:
    """Cascading re-initialisation of a fitted method's network; writes heatmaps/<name>.randomization.json."""
    from wsl_bench.metrics.randomization import randomization_record

    spec = run.config["methods"][name]
    t0 = time.perf_counter()
    method = create_method(spec["registry"], spec["config"], device="cpu", preset=None)
    method.name = name
    method.load(run.dir / "checkpoints" / name)
    test = cohort.test
    idx = sample_box_images(test, int(run.config["score"].get("sanity_images", 16)), int(run.config["seed"]))
    images = test.load_images(idx)
    path = randomization_path(run.dir, name)
    try:
        record = randomization_record(method, images, list(BOX_FINDING_INDICES), [test.image_ids[int(i)] for i in idx],
                                      seed=int(run.config["seed"]))
    except ValueError as exc:  # a method without a network to re-initialise: say so in its summary
        record = {"skipped": str(exc)}
    write_json(path, record)
    seconds = round(time.perf_counter() - t0, 3)
    run.manifest.setdefault("timings", {}).setdefault(name, {})["randomization_s"] = seconds
    run.mark_done(f"randomization/{name}", key, {f"heatmaps/{path.name}": sha256_file(path)})


def _reference_per_box(run, name: str) -> dict[str, pd.DataFrame]:
    """The guesses' per-box tables already scored in this run (none for a guess: guesses are the floor)."""
    out = {}
    if run.config["methods"][name]["registry"] in GUESS_REFERENCES:
        return out
    for ref in run.config["methods_order"]:
        if ref == name or run.config["methods"][ref]["registry"] not in GUESS_REFERENCES:
            continue
        path = run.dir / "scores" / ref / "per_box.csv"
        if path.is_file() and run.stage(f"score/{ref}").get("done"):
            out[ref] = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
    return out


def _prior_maps(run) -> dict[str, np.ndarray]:
    """The image-independent prior maps as this run fitted them (prior-lung: the train split's lungs)."""
    out = {}
    for ref in run.config["methods_order"]:
        registry = run.config["methods"][ref]["registry"]
        if registry not in PRIOR_MAP_REFERENCES or not (run.dir / "checkpoints" / ref).is_dir():
            continue
        method = create_method(registry, run.config["methods"][ref]["config"], device="cpu", preset=None)
        method.load(run.dir / "checkpoints" / ref)
        out[registry] = np.asarray(method.prior_map, dtype=np.float64)
    return out


def sanity_inputs(run, name: str) -> dict[str, str]:
    """Digests of what a method's sanity summary reads besides its bundle (for the score stage's key)."""
    out = {}
    if run.config["score"].get("sanity", True):
        guess = run.config["methods"][name]["registry"] in GUESS_REFERENCES
        for ref in run.config["methods_order"] if not guess else ():
            if run.config["methods"][ref]["registry"] in GUESS_REFERENCES:
                out[f"ref:{ref}"] = str(sorted(run.stage(f"score/{ref}").get("files", {}).items()))
        out["randomization"] = str(sorted(run.stage(f"randomization/{name}").get("files", {}).items()))
    return out


def run_sanity_summary(run, name: str, bundle, result, sizes: dict[str, tuple[int, int]]) -> dict:
    """`summary.json["sanity"]` for one method of a run, from its bundle and scored per-box table."""
    registry = run.config["methods"][name]["registry"]
    record, skipped = None, None
    path = randomization_path(run.dir, name)
    if not wants_randomization(run.config, name):
        skipped = "not a trainable method: it has no weights to re-initialise"
    elif not path.is_file():
        skipped = "no randomisation record in this run"
    else:
        record = json.loads(path.read_text())
        if "skipped" in record:
            record, skipped = None, record["skipped"]
    sc = run.config["score"]
    return sanity_summary(
        bundle, result.per_box, lambda i: sizes[i], iou_thresholds=result.summary["iou_thresholds"],
        name=registry, references=_reference_per_box(run, name), prior_maps=_prior_maps(run),
        randomization=record, randomization_skipped=skipped, n_boot=int(sc["n_boot"]), seed=int(run.config["seed"]),
    )
