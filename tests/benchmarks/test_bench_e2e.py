"""The end-to-end run, timed: data -> fit -> explain -> score -> report in a fresh run folder.

    pytest tests/benchmarks/test_bench_e2e.py --benchmark-enable          # the quick preset, clarity,gradcam

With benchmarks enabled this is `wsl-bench run --methods clarity,gradcam` (quick preset: SynthCXR at
128 px on CPU; the product target is <= 10 min on 2 cores), called through `wsl_bench.run.build_config`
and `execute` exactly as the CLI does. With the suite's default `--benchmark-disable` it is the `tiny`
preset with gradcam only. `extra_info` has wall and process CPU seconds and the per-method timings the
run wrote to its manifest (fit_s, explain_s, heatmaps_per_s); on a loaded machine trust the CPU seconds.
"""

from __future__ import annotations

import itertools
import json
import time

import torch

from wsl_bench.run import build_config, execute

TINY = {"data": {"n_train": 64, "n_val": 32, "n_test": 32}, "score": {"n_boot": 20}}


def test_end_to_end_run(benchmark, tmp_path):
    full = not benchmark.disabled
    config = (build_config(["clarity", "gradcam"], preset="quick") if full
              else build_config(["gradcam"], preset="tiny", overrides=TINY))
    counter = itertools.count()
    cpu, folders = [], []

    def fresh_folder():
        folders.append(tmp_path / f"run{next(counter)}")
        return (folders[-1],), {}

    def run(out):
        start = time.process_time()
        report = execute(config, out, log=lambda msg: None)
        cpu.append(time.process_time() - start)
        return report

    report = benchmark.pedantic(run, setup=fresh_folder, rounds=1, iterations=1)
    out = folders[-1]
    assert report is not None and report.is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    for m in config["methods_order"]:
        summary = json.loads((out / "scores" / m / "summary.json").read_text())
        assert summary["n_boxes"] > 0
    benchmark.group = "end-to-end run"
    benchmark.extra_info.update(
        preset=config["preset"], methods=config["methods_order"], threads=torch.get_num_threads(),
        cpu_s=round(cpu[-1], 1), timings=manifest.get("timings", {}),
    )
