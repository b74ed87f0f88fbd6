"""Speed of SynthCXR generation: 5,000 images at 256x256 (the target is <= 60 s on 2 cores).

With --benchmark-disable (the default suite) this runs a small cohort once as a plain test.
Timed: label sampling, anatomy bank, rendering, reports (the lung-shape templates, their boxes and the
real pneumothorax shapes come from the disk cache, as after a first run).
"""

from __future__ import annotations

import torch

from wsl_bench.data import assets
from wsl_bench.data.synth import SynthConfig, _bank, generate_cohort
from wsl_bench.data.synth.reports import openi_normal_sentences


def test_bench_generate_5000_at_256(benchmark, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "wsl-bench-cache"
    assets.lung_templates(cache)  # disk-cached assets, built once
    assets.lung_template_boxes(cache)
    assets.pneumothorax_shapes(cache)
    n, g = (32, 64) if benchmark.disabled else (5000, 256)
    cfg = SynthConfig(n_train=n, n_val=0, n_test=0, generate_size=g, image_size=min(g, 128), seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)

    def run():
        if not benchmark.disabled:  # time the one-off work too: tables, anatomy bank, report phrases
            _bank.cache_clear()
            assets.real_data_entry.cache_clear()
            openi_normal_sentences.cache_clear()
        return generate_cohort(cfg, cache_dir=cache)

    try:
        out = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(threads)
    assert out["train"]["images"].shape == (n, g, g)
