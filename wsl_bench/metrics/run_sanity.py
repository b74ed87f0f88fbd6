"""The sanity instruments inside a run folder: the randomisation stage and each method's sanity summary.

The run's randomization and score stages (`wsl_bench.stages`) call these; they read and write only the run
folder (`heatmaps/`, `scores/`, `checkpoints/`) through the `Run` object handed to them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsl_bench.heatmaps import bundle_key, read_bundle
from wsl_bench.io import sha256_file, write_json
from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS
from wsl_bench.methods import create_method, get_method_info
from wsl_bench.metrics.sanity import INSTRUMENTS_VERSION, sanity_summary
from wsl_bench.references import GUESS_REFERENCES, PRIOR_MAP_REFERENCES

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
    ids = [test.image_ids[int(i)] for i in idx]
    try:
        with read_bundle(run.dir / "heatmaps" / f"{name}.npz") as bundle:  # the trained maps: explained already
            trained = np.stack([np.stack([bundle[bundle_key(i, lab)] for lab in BOX_FINDINGS]) for i in ids])
    except (KeyError, ValueError, FileNotFoundError):
        trained = None
    try:
        record = randomization_record(method, images, list(BOX_FINDING_INDICES), ids, seed=int(run.config["seed"]),
                                      trained=trained)
    except ValueError as exc:  # a method without a network to re-initialise: say so in its summary
        record = {"skipped": str(exc)}
    write_json(path, record)
    seconds = round(time.perf_counter() - t0, 3)
    run.manifest.setdefault("timings", {}).setdefault(name, {})["randomization_s"] = seconds
    run.mark_done(f"randomization/{name}", key, {f"heatmaps/{path.name}": sha256_file(path)})


def _prior_maps(run) -> dict[str, np.ndarray]:
    """The image-independent prior maps as this run fitted them (prior-lung: the train split's lungs)."""
    out = {}
    for ref in run.config["methods_order"]:
        registry = run.config["methods"][ref]["registry"]
        if registry not in PRIOR_MAP_REFERENCES or not (run.dir / "checkpoints" / ref).is_dir():
            continue
        method = create_method(registry, run.config["methods"][ref]["config"], device="cpu", preset=None)
        method.load(run.dir / "checkpoints" / ref)
        out[registry] = np.asarray(method.prior_map, dtype=np.float32)
    return out


def _guesses(run, boxes, sizes, patients, options) -> tuple[dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """The priors' maps and their per-box tables on this run's boxes (scored once per run process).

    The priors look at no pixel, so scoring their maps here, under the run's policy, gives exactly
    what their own score stage gives, whatever order the methods are scored in."""
    key = config_digest(run)
    cache = getattr(run, "_guess_cache", None)
    if cache is None or cache[0] != key:
        from wsl_bench.metrics.evaluator import score

        prior_maps = _prior_maps(run)
        keys = {bundle_key(i, lab) for i, lab in zip(boxes["image_id"], boxes["label"])}
        per_box = {}
        for name, prior in prior_maps.items():
            per_box[name] = score({k: prior for k in keys}, boxes.copy(), sizes, policy=run.config["score"]["policy"],
                                  patients=patients, seed=int(run.config["seed"]), n_boot=0, **options).per_box
        cache = (key, per_box, prior_maps)
        run._guess_cache = cache
    return cache[1], cache[2]


def config_digest(run) -> str:
    """What the guesses' tables depend on: the priors' fitted files and the score settings."""
    return str([sanity_inputs(run, "")])


def sanity_inputs(run, name: str) -> dict[str, str]:
    """Digests of what a method's sanity summary reads besides its bundle (for the score stage's key)."""
    out = {}
    if run.config["score"].get("sanity", True):
        for ref in run.config["methods_order"]:
            if run.config["methods"][ref]["registry"] in PRIOR_MAP_REFERENCES:
                out[f"prior:{ref}"] = str(sorted(run.stage(f"fit/{ref}").get("files", {}).items()))
        out["score"] = str(sorted((k, str(v)) for k, v in run.config["score"].items()))
        out["instruments"] = str(INSTRUMENTS_VERSION)
        if name:
            out["randomization"] = str(sorted(run.stage(f"randomization/{name}").get("files", {}).items()))
    return out


def run_sanity_summary(run, name: str, bundle, result, boxes, sizes: dict[str, tuple[int, int]], patients,
                       options: dict[str, Any]) -> dict:
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
    refs, prior_maps = _guesses(run, boxes, sizes, patients, options)
    sc = run.config["score"]
    return sanity_summary(
        bundle, result.per_box, lambda i: sizes[i], iou_thresholds=result.summary["iou_thresholds"],
        name=registry, references={} if registry in GUESS_REFERENCES else refs, prior_maps=prior_maps,
        randomization=record, randomization_skipped=skipped, n_boot=int(sc["n_boot"]), seed=int(run.config["seed"]),
    )
