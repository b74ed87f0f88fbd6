"""The score stage: a method's bundle scored against the test boxes into scores/<method>/ (swapped in whole).

The sanity instruments join its summary.json (`wsl_bench.metrics.run_sanity`), so its key also covers
what they read: the priors' fitted files and the method's randomisation record. Where the data stage wrote
each reader's boxes (data/reader_boxes.csv), the bundle is also scored against every reader into
scores/<method>/readers/<reader>/; with ``score.mask_metrics`` the mask Dice / IoU metric joins the scores.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
import time

import numpy as np
import pandas as pd

from wsl_bench.config import config_hash
from wsl_bench.io import write_json
from wsl_bench.labels import FINDINGS
from wsl_bench.metrics.mask_overlap import MASK_KEYS, mask_scope
from wsl_bench.metrics.run_sanity import SANITY_KEYS, run_sanity_summary, sanity_inputs, wants_randomization
from wsl_bench.stages.base import RunFolder, files_under, is_rank_zero
from wsl_bench.stages.data import READERS_FILE

READER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def sanity_inputs_digest(run: RunFolder, name: str) -> dict[str, str]:
    """The score stage's key part for what the sanity summary reads besides the bundle."""
    inputs = sanity_inputs(run, name)
    return {"sanity_inputs": config_hash(inputs)} if inputs else {}


def score_readers(bundle, readers_csv: Path, out_dir: Path, sizes, patients, policy: str, seed: int, n_boot: int,
                  options: dict) -> None:
    """Score `bundle` against each reader's boxes (`readers_csv`: BOX_COLUMNS + reader) into out_dir/<reader>/,
    under the same policy and options as the consensus (a reader's repeated identical box counts once)."""
    from wsl_bench.metrics import score

    table = pd.read_csv(readers_csv, dtype={"image_id": str, "reader": str})
    for reader, boxes in table.groupby("reader", sort=True):
        if not READER_NAME.fullmatch(reader):
            raise ValueError(f"{readers_csv}: reader {reader!r} is not usable as a folder name; "
                             f"use letters, digits, '.', '_' or '-'")
        boxes = boxes.drop(columns="reader").drop_duplicates(["image_id", "label", "x", "y", "w", "h"])
        score(bundle, boxes.reset_index(drop=True), sizes, policy=policy, patients=patients, seed=seed,
              n_boot=n_boot, out_dir=out_dir / reader, **options)


def score_stage(run: RunFolder, name: str, key: str) -> None:
    """Score one method's bundle against the test boxes into scores/<name>/ (swapped in atomically)."""
    from wsl_bench.heatmaps import read_bundle
    from wsl_bench.metrics import score

    data = run.dir / "data"
    images = pd.read_csv(data / "images.csv", dtype={"image_id": str, "patient_id": str})
    boxes = pd.read_csv(data / "boxes.csv", dtype={"image_id": str})
    probs = pd.read_csv(run.dir / "heatmaps" / f"{name}.probs.csv", dtype={"image_id": str}).set_index("image_id")
    labels = images.set_index("image_id")[list(FINDINGS)]
    sizes = {r.image_id: (int(r.orig_h), int(r.orig_w)) for r in images.itertuples()}
    patients = dict(zip(images["image_id"], images["patient_id"]))
    masks = None
    if (data / "masks.npz").is_file():
        with np.load(data / "masks.npz", allow_pickle=False) as z:
            masks = {k: z[k] for k in z.files}
    sc = run.config["score"]
    options = {k: v for k, v in sc.items() if k not in ("policy", "n_boot", *SANITY_KEYS, *MASK_KEYS)}
    t0 = time.perf_counter()
    final = run.dir / "scores" / name
    tmp = run.dir / "scores" / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with read_bundle(run.dir / "heatmaps" / f"{name}.npz") as bundle:
        with mask_scope(sc):
            result = score(
                bundle, boxes, sizes, policy=sc["policy"], patients=patients, probs=probs, labels=labels, masks=masks,
                seed=run.config["seed"], n_boot=int(sc["n_boot"]), out_dir=tmp, **options,
            )
        if sc.get("sanity", True):  # the instruments join the summary in the same temporary folder
            t_sanity = time.perf_counter()
            result.summary["sanity"] = run_sanity_summary(run, name, bundle, result, boxes, sizes, patients, options)
            write_json(tmp / "summary.json", result.summary)
            run.manifest.setdefault("timings", {}).setdefault(name, {})["sanity_score_s"] = round(
                time.perf_counter() - t_sanity, 3)
        if (data / READERS_FILE).is_file():  # in the same temporary folder: swapped in with the rest
            score_readers(bundle, data / READERS_FILE, tmp / "readers", sizes, patients, sc["policy"],
                          run.config["seed"], int(sc["n_boot"]), options)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    run.manifest.setdefault("timings", {}).setdefault(name, {})["score_s"] = round(time.perf_counter() - t0, 3)
    run.mark_done(f"score/{name}", key, files_under(final, run.dir))


class ScoreStage:
    """per_box.csv and summary.json of one method."""

    name = title = "score"
    per_method = True

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str:
        return config_hash({"explain": upstream[f"explain/{method}"], "maps": run.files_digest(f"explain/{method}"),
                            "data": run.files_digest("data"), "score": run.config["score"],
                            **sanity_inputs_digest(run, method)})

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        priors = tuple(f"fit/{k.split(':', 1)[1]}" for k in sanity_inputs(run, "") if k.startswith("prior:"))
        randomized = (f"randomization/{method}",) if wants_randomization(run.config, method) else ()
        return ("data", f"explain/{method}", *randomized, *priors)

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return (f"scores/{method}",)

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        return is_rank_zero()

    def run(self, run: RunFolder, cohort, method: str | None, key: str) -> None:
        score_stage(run, method, key)


SCORE = ScoreStage()
