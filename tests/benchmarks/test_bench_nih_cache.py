"""Images per second of the NIH data loader on 1024-px PNGs, with and without the resized image cache.

An "epoch" is one pass of a training-style DataLoader (batch 32, shuffled, `num_workers=0`, the per-item
`__getitem__` path) over every image of the cohort, at 224 and at 512 px. Uncached, each item decodes its
1024² PNG and resizes it (`load_nih(preload=False, cache=False)`); cached, it reads the row of the
memory-mapped uint8 file (`load_nih(cache=True)`, built once before the timing; its build time is
reported too). Same pixels either way (checked here on every image).

    pytest tests/benchmarks/test_bench_nih_cache.py --benchmark-enable -s

makes its own 1024-px NIH-layout folder (300 synthetic images, ~2 min); to time another folder, e.g. the
`--mirror-nih` export used for docs/scale.md, name it:

    wsl-bench synth export --mirror-nih --n 0 --size 1024 --out /tmp/nih-mirror-1024
    WSL_BENCH_NIH_MIRROR=/tmp/nih-mirror-1024 pytest tests/benchmarks/test_bench_nih_cache.py --benchmark-enable -s

With --benchmark-disable (the default suite) it runs once on 24 small images as a plain test.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch.utils.data import DataLoader

from wsl_bench.data.export import export_nih_layout
from wsl_bench.data.nih import load_nih

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def nih_root(request, tmp_path_factory):
    disabled = request.config.getoption("benchmark_disable") and not request.config.getoption("benchmark_enable")
    if os.environ.get("WSL_BENCH_NIH_MIRROR") and not disabled:
        return os.environ["WSL_BENCH_NIH_MIRROR"]
    out = tmp_path_factory.mktemp("nih1024") / "nih"
    n, size = (24, 64) if disabled else (300, 1024)
    export_nih_layout(out, n=n, size=size, seed=0)
    return out


def epoch(cohort) -> tuple[int, float, float, list[int]]:
    """(images, wall s, CPU s, the image indices seen) of one shuffled pass over every split; the loop
    only takes the batches, as a training step would (pixels are compared outside the timing)."""
    n, seen = 0, []
    t0, c0 = time.perf_counter(), time.process_time()
    for s in SPLITS:
        ds = getattr(cohort, s)
        if not len(ds):
            continue
        loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(0))
        for batch in loader:
            n += batch["image"].shape[0]
            seen.append(batch["index"])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n, wall, cpu, sorted(torch.cat(seen).tolist()) if seen else []


@pytest.mark.parametrize("size", [224, 512])
def test_bench_nih_epoch_cached_vs_decoded(benchmark, nih_root, tmp_path, size):
    size = size if not benchmark.disabled else size // 16
    plain = load_nih(nih_root, image_size=size, preload=False, cache=False)
    n, wall_plain, cpu_plain, seen_plain = epoch(plain)

    t0 = time.perf_counter()
    cached = load_nih(nih_root, image_size=size, cache=True, cache_dir=tmp_path / "cache")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_nih(nih_root, image_size=size, cache=True, cache_dir=tmp_path / "cache")  # verify + map, no build
    reopen = time.perf_counter() - t0
    for s in SPLITS:  # the cache holds exactly what the decoder returns
        a, b = getattr(plain, s), getattr(cached, s)
        if not len(a):  # (a --mirror-nih export with --n 0 has only test images)
            continue
        idx = list(range(len(a)))
        assert torch.equal(a.load_images(idx), b.load_images(idx))

    rounds: list[tuple[int, float, float, list[int]]] = []
    benchmark.pedantic(lambda: rounds.append(epoch(cached)), rounds=3 if not benchmark.disabled else 1, iterations=1)
    n_c, wall_cached, cpu_cached, seen_cached = min(rounds, key=lambda r: r[1])  # the fastest of the cached epochs
    assert n_c == n and seen_cached == seen_plain
    info = {
        "images": n, "size": size, "decoded_images_per_s": n / wall_plain, "decoded_images_per_cpu_s": n / cpu_plain,
        "cached_images_per_s": n / wall_cached, "cached_images_per_cpu_s": n / max(cpu_cached, 1e-9),
        "speedup_wall": wall_plain / wall_cached, "cache_build_s": build, "cache_reopen_s": reopen,
        "load_average": os.getloadavg()[0],
    }
    benchmark.extra_info.update(info)
    print(
        f"\n{size} px, {n} images from {int(plain.test.orig_sizes[0][1])}-px PNGs: decoded {info['decoded_images_per_s']:.1f} img/s "
        f"({info['decoded_images_per_cpu_s']:.1f}/CPU-s), cached {info['cached_images_per_s']:.0f} img/s "
        f"({info['cached_images_per_cpu_s']:.0f}/CPU-s), {info['speedup_wall']:.0f}x per epoch; "
        f"build {build:.1f} s, load_nih on the built cache (verify) {reopen:.2f} s, load average {info['load_average']:.1f}"
    )
