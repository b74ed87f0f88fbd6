"""SynthCXR's lesion geometry beside the 984 real NIH boxes, judged only by image-independent references.

prior-center and prior-lung look at no pixel, so their box scores on a cohort follow from its box
geometry alone (docs/scoring.md, "Floors on the real NIH geometry"). SynthCXR draws its boxes from the
real boxes of each class (wsl_bench/data/synth/geometry.py); here the references' IoU accuracy per class
and per size bin, and the size-bin shares, must stay within the tolerances of docs/data.md of NIH's.
"""

from __future__ import annotations

import pandas as pd
import pytest

from wsl_bench.data.synth import SynthConfig, load_synth
from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.metrics.floors import (
    FLOOR_METHODS,
    collect,
    composition,
    floor_cohort_of,
    nih_cohort,
    realism_gaps,
    score_cohort,
)


@pytest.mark.slow
def test_box_geometry_stays_nih_like(tmp_path):
    """A 1,600-image test split (about 1,500 boxes, so sampling noise is small beside the 0.1 tolerance)
    and 400 training images for the fitted prior-lung; every per-class and per-bin figure at T(IoU)
    0.1/0.2/0.3 within 0.1 of NIH's, every size-bin share within 5 points."""
    from wsl_bench.run import build_config

    cfg = build_config(list(FLOOR_METHODS), preset="quick", seed=1)  # the references as a quick run fits them
    data = load_synth(SynthConfig(n_train=400, n_val=0, n_test=1600, seed=1), cache_dir=False)
    synth = floor_cohort_of(data, cfg, FLOOR_METHODS)
    assert len(synth.boxes) > 1200 and set(synth.boxes["label"]) == set(BOX_FINDINGS)
    nih = nih_cohort(FLOOR_METHODS)
    folders = {c.name: score_cohort(c, tmp_path, FLOOR_METHODS, ["wang2017"], n_boot=0) for c in (nih, synth)}
    rows = pd.concat([collect(tmp_path, f, name) for name, f in folders.items()], ignore_index=True)
    comp = composition({"nih": nih.binned_boxes(), "synth": synth.binned_boxes()})
    gaps = realism_gaps(rows, comp)
    assert not gaps, "\n".join(str(g) for g in gaps)
