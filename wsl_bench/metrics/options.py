"""The scorer's settings checked before anything is read: the run's `score` section and `wsl-bench score`'s options.

`score_problems` returns every problem at once (one sentence each), so `wsl_bench.settings` can list them with
the other run settings and `wsl-bench score` can refuse a bad option before it reads a file. The known options
are the scorer's (`DEFAULT_OPTIONS`) plus the chosen policy's own (`Policy.options`, so a plug-in policy's
option is accepted as `--set score.<option>=...`); the policy's own rules come from `resolve_options`.
"""

from __future__ import annotations

from typing import Any

from wsl_bench.value_checks import boolean, real, unknown_keys, whole

MAX_N_BOOT = 10_000  # [n_boot x n_units] resampling counts are held in memory
SCORE_RUN_KEYS = {"policy", "n_boot", "sanity", "sanity_images", "mask_metrics", "mask_tau"}  # a run's score section besides the options
THRESHOLD_LISTS = ("iou_thresholds", "iobb_thresholds", "miou_thresholds", "sweep_grid", "maxboxacc_iou")


def score_problems(score: dict[str, Any], prefix: str = "score.", *, run: bool = True) -> list[str]:
    """The scorer's settings: policy, n_boot, the policy options, and (in a run) the sanity switches.

    `prefix` names the keys in messages (`score.` in a run, `--` for `wsl-bench score`'s options)."""
    from wsl_bench.localize.policies import COMPONENT_RULES
    from wsl_bench.localize.registry import get_policy, policy_names
    from wsl_bench.metrics.evaluator import DEFAULT_OPTIONS, resolve_options

    def name(k: str) -> str:
        return f"{prefix}{k.replace('_', '-') if prefix == '--' else k}"

    out: list[str] = []
    policy = score.get("policy", "wang2017")
    names = policy_names()
    registered = policy in names
    own = set(get_policy(policy).options) if registered else set()
    known = set(DEFAULT_OPTIONS) | own | {"policy", "n_boot"} | (SCORE_RUN_KEYS if run else set())
    out.append(unknown_keys("score", score, known))
    if not registered:
        out.append(f"unknown policy {policy!r} ({name('policy')}); choose one of {', '.join(names)}")
    if "n_boot" in score:
        out.append(whole(name("n_boot"), score["n_boot"], 0, MAX_N_BOOT))
    if "sanity" in score:
        out.append(boolean(name("sanity"), score["sanity"]))
    if run and "mask_metrics" in score:
        out.append(boolean(name("mask_metrics"), score["mask_metrics"]))
    if run and "mask_tau" in score:
        out.append(real(name("mask_tau"), score["mask_tau"], 0.0, 1.0, hi_open=True))
    if "sanity_images" in score:
        out.append(whole(name("sanity_images"), score["sanity_images"], 1, 100_000))
    opts = {k: v for k, v in score.items() if k in DEFAULT_OPTIONS or k in own}
    if opts.get("tau") is not None:
        out.append(real(name("tau"), opts["tau"], 0.0, 1.0, hi_open=True))
    if opts.get("components") is not None and opts["components"] not in COMPONENT_RULES:
        out.append(f"{name('components')}={opts['components']!r} must be one of {', '.join(COMPONENT_RULES)}")
    if "pointing_tolerance" in opts:
        out.append(real(name("pointing_tolerance"), opts["pointing_tolerance"], 0.0, 1e6))
    if opts.get("sweep_size") is not None:
        out.append(whole(name("sweep_size"), opts["sweep_size"], 0, 65_536))
    if "calibration_fraction" in opts:
        out.append(real(name("calibration_fraction"), opts["calibration_fraction"], 0.0, 1.0, lo_open=True, hi_open=True))
    for key in THRESHOLD_LISTS:
        if key in opts:
            v = opts[key]
            if not isinstance(v, (list, tuple)) or not v or any(real("", t, 0.0, 1.0) for t in v):
                out.append(f"{name(key)}={v!r} must be a non-empty list of numbers in [0, 1]")
    if "progress" in opts:
        out.append(boolean(name("progress"), opts["progress"]))
    out = [p for p in out if p]
    if not out and registered:  # the scorer's and the policy's own rules (e.g. wang2017 fixes tau)
        try:
            resolve_options(policy, dict(opts))
        except (ValueError, TypeError) as exc:
            out.append(f"score settings: {exc}")
    return out
