"""The stage protocol: every stage declares its key, inputs and outputs; the run loop and plan name no dataset."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from wsl_bench import run as R
from wsl_bench import stages as S
from wsl_bench.stages.base import Stage, entry

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"data": {"n_train": 64, "n_val": 32, "n_test": 32}, "score": {"n_boot": 5}, "report": {"full": False}}


def small_config(methods=("random",), overrides=None, **kw):
    over = json.loads(json.dumps(SMALL))
    for section, values in (overrides or {}).items():
        over.setdefault(section, {}).update(values)
    return R.build_config(list(methods), preset="tiny", seed=0, overrides=over, **kw)


@pytest.mark.parametrize("stage", S.STAGES, ids=lambda s: s.name)
def test_every_stage_satisfies_the_protocol(stage, tmp_path):
    for member in ("key", "inputs", "outputs", "takes_part", "run"):
        assert callable(getattr(stage, member)), member
        assert list(inspect.signature(getattr(stage, member)).parameters)[:2] == list(
            inspect.signature(getattr(Stage, member)).parameters)[1:3], member
    assert stage.name and stage.title and isinstance(stage.per_method, bool)
    run = R.Run(tmp_path, small_config())
    method = "random" if stage.per_method else None
    outputs = stage.outputs(run, method)
    assert outputs and all(not Path(o).is_absolute() for o in outputs)
    assert all(isinstance(i, str) for i in stage.inputs(run, method))
    assert S.get_stage(stage.name) is stage


def test_passes_run_the_stages_in_data_fit_explain_score_report_order():
    assert [s.name for s in S.STAGES] == ["data", "fit", "explain", "randomization", "score", "report"]
    assert [[s.name for s in p] for p in S.PASSES] == [["data"], ["fit"], ["explain", "randomization", "score"], ["report"]]
    assert [s.per_method for s in S.STAGES] == [False, True, True, True, True, False]
    assert entry(S.DATA, None) == "data" and entry(S.FIT, "gradcam") == "fit/gradcam"
    with pytest.raises(KeyError, match="unknown stage 'nope'; the stages are data, fit"):
        S.get_stage("nope")


def test_keys_follow_their_inputs(tmp_path):
    """A stage's key changes with its own config section and its upstream keys, and with nothing else."""
    run = R.Run(tmp_path, small_config())
    up = {"fingerprint": "synth-abc"}
    data, fit = S.DATA.key(run, None, up), S.FIT.key(run, "random", up)
    assert data == S.DATA.key(run, None, dict(up)) and len(data) == 64  # deterministic sha256
    assert S.DATA.key(run, None, {"fingerprint": "synth-other"}) != data  # the cohort changed
    assert S.FIT.key(run, "random", {"fingerprint": "synth-other"}) != fit
    explain = S.EXPLAIN.key(run, "random", {**up, "fit/random": fit})
    assert S.EXPLAIN.key(run, "random", {**up, "fit/random": "another fit"}) != explain
    scored = R.Run(tmp_path, small_config(overrides={"score": {"n_boot": 7}}))
    assert S.FIT.key(scored, "random", up) == fit  # a scoring setting does not refit
    assert S.EXPLAIN.key(scored, "random", {**up, "fit/random": fit}) == explain
    assert S.SCORE.key(scored, "random", {"explain/random": explain}) != S.SCORE.key(run, "random", {"explain/random": explain})
    assert S.RANDOMIZATION.key(run, "random", {"explain/random": explain}) is None  # a reference: no weights
    assert S.REPORT.inputs(run, None) == tuple(f"score/{m}" for m in run.config["methods_order"])
    # a score reads the data, the method's maps, its randomisation record if it has one, and the fitted priors
    priors = ("fit/prior-center", "fit/prior-lung")
    assert S.SCORE.inputs(run, "random") == ("data", "explain/random", *priors)
    assert S.SCORE.inputs(run, "oracle-seg") == ("data", "explain/oracle-seg", "randomization/oracle-seg", *priors)


def test_plan_of_a_fresh_folder_lists_every_applicable_stage(tmp_path):
    run = R.Run(tmp_path / "nothing", small_config())
    run.load_manifest()
    steps = R.plan(run)
    from wsl_bench.methods import get_method_info

    methods = run.config["methods_order"]
    trained = [m for m in methods if get_method_info(m).cls.trainable]
    assert trained == ["oracle-seg"]  # the only trainable reference: it gets the randomization test
    checks = {m: ("explain", "randomization", "score") if m in trained else ("explain", "score") for m in methods}
    assert [s for s, _ in steps] == ["data", *[f"fit/{m}" for m in methods],
                                     *[f"{s}/{m}" for m in methods for s in checks[m]], "report"]
    assert {status for _, status in steps} == {"to do"}
    assert not (tmp_path / "nothing").exists()


def test_run_and_stages_name_no_dataset():
    from wsl_bench.data.registry import available_datasets

    sources = [ROOT / "wsl_bench" / "run.py", *sorted((ROOT / "wsl_bench" / "stages").glob("*.py"))]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for name in available_datasets():
            assert not re.search(rf"""["']{re.escape(name)}["']""", text), f"{path.name} names dataset {name!r}"


def test_run_keeps_offering_its_public_names():
    for name in ("RunError", "MethodsFailed", "build_config", "execute", "plan", "REFERENCE_METHODS", "DEFAULT_METHODS",
                 "parse_overrides", "dry_run_text", "run_config_hash", "HASHED_SECTIONS", "PRESETS", "run_lock", "Run",
                 "load_cohort", "explain_world", "explain_threads", "is_rank_zero"):
        assert hasattr(R, name), name
    assert set(R.__all__) <= set(dir(R))
    assert R.REFERENCE_METHODS == ("prior-center", "prior-lung", "random", "oracle-seg")


def test_reference_names_have_one_home():
    from wsl_bench import references as refs
    from wsl_bench.metrics import sanity as metric_sanity
    from wsl_bench.report import runs as report_runs
    from wsl_bench.report import sanity as report_sanity

    assert refs.REFERENCE_METHODS == refs.GUESS_REFERENCES + refs.CEILING_REFERENCES
    assert set(refs.PRIOR_MAP_REFERENCES) <= set(refs.GUESS_REFERENCES)
    assert metric_sanity.GUESS_REFERENCES is refs.GUESS_REFERENCES
    assert metric_sanity.CEILING_REFERENCES is refs.CEILING_REFERENCES
    assert report_runs.GUESS_REFERENCES is refs.GUESS_REFERENCES
    assert report_sanity.CEILING_METHODS is refs.CEILING_REFERENCES
    assert R.REFERENCE_METHODS is refs.REFERENCE_METHODS
