"""What `wsl-bench run --dry-run` says about the data and each method before anything runs: sizes, memory,
previous timings, and for a method never timed in the folder, time estimates from one probe batch.

The GPU estimate's assumptions (docs/harness.md, "Dry run"): an effective training/inference rate for small
CNNs and ViTs at batch 32 in bf16 on a data-centre GPU (A100/H100 class), far below the dense peak, plus a
fixed cost per batch (the Lightning loop, logging, the host-to-device copy). Stated, not measured here.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS
from wsl_bench.methods import get_method_info
from wsl_bench.stages.base import RunFolder
from wsl_bench.stages.fit import make_method, n_params

GPU_EFFECTIVE_FLOPS = 20e12
GPU_BATCH_OVERHEAD_S = 0.01
SPLIT_COUNTS = ("n_train", "n_val", "n_test")


def duration(seconds: float) -> str:
    """0.4 s, 45 s, 12 min, 2.3 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def data_lines(config: dict[str, Any]) -> list[str]:
    """The data line(s): dataset, image size, and the split sizes where the config fixes them, else the folder."""

    def describe(d: dict[str, Any]) -> str:
        if all(k in d for k in SPLIT_COUNTS):
            return f"{d['name']} at {d['image_size']} px, {d['n_train']}/{d['n_val']}/{d['n_test']} train/val/test images"
        return f"{d['name']} at {d['image_size']} px from {d.get('root')}"

    lines = [f"data: {describe(config['data'])}"]
    if "test_data" in config:
        lines.append(f"test data (external validation: its test split is scored): {describe(config['test_data'])}")
    return lines


def method_lines(run: RunFolder) -> list[str]:
    """Per method: trainable or not, parameters and memory, previous timings, or a probe estimate."""
    config = run.config
    s = int(config["data"]["image_size"])
    lines = []
    for m in config["methods_order"]:
        t = run.manifest.get("timings", {}).get(m, {})
        ebs = int(config["explain"]["batch_size"])
        mem = ebs * s * s * 4 * (1 + len(BOX_FINDINGS)) / 2**20
        info = get_method_info(config["methods"][m]["registry"])
        prev = ", ".join(f"{k}={v}" for k, v in sorted(t.items())) or "not measured yet"
        try:
            method = make_method(run, m)
            size = n_params(method)
        except Exception:  # noqa: BLE001 - an estimate must not stop the plan
            method, size = None, 0
        train_mem = f"{size:,} parameters ≈ {size * 16 / 2**20:.1f} MiB with gradients and AdamW state; " if size else ""
        lines.append(f"method {m}: {'trainable' if info.cls.trainable else 'no training'}; {train_mem}explain batch "
                     f"{ebs} x {s}px ≈ {mem:.1f} MiB of images+maps; previous timings: {prev}")
        if not t and method is not None:
            lines.append(f"  estimate: {time_estimate(method, config, m, trainable=info.cls.trainable)}")
    return lines


def fit_loop(method, config: dict[str, Any]) -> tuple[int, int, int]:
    """(epoch cap, early-stopping patience, batch size) the method's fit will run with.

    The run's fit.max_epochs / fit.batch_size win (as in train_module); else the method's own keys (`max_epochs`,
    or CLARiTy's `epochs`), including the defaults its class merges in; patience: the method's key, else
    train_module's default."""
    from wsl_bench.training import DEFAULT_PATIENCE

    conf, typed = dict(getattr(method, "config", {}) or {}), getattr(method, "cfg", None)

    def key(*names: str, default: Any = None) -> Any:
        for n in names:
            if conf.get(n) is not None:
                return conf[n]
            if getattr(typed, n, None) is not None:
                return getattr(typed, n)
        return default

    cap = config["fit"].get("max_epochs") or key("max_epochs", "epochs", default=1)
    batch = config["fit"].get("batch_size") or key("batch_size", default=32)
    patience = key("patience", default=DEFAULT_PATIENCE)
    return max(1, int(cap)), max(1, int(patience)), max(1, int(batch))


def time_estimate(method, config: dict[str, Any], name: str, *, trainable: bool, n_probe: int = 16) -> str:
    """Rough times from one probe batch of random images through the untrained method on this machine.

    CPU (probe timings): explain ≈ probe seconds per image x test images (an upper bound: only box images
    get maps); fit ≈ (3 x forward seconds per image x train images + forward seconds x validation images) per
    epoch, for between min(cap, patience + 1) epochs (early stopping at its first chance) and the epoch cap.
    GPU (a second line): the same counts in FLOPs, at GPU_EFFECTIVE_FLOPS plus GPU_BATCH_OVERHEAD_S per batch: a
    forward pass's FLOPs are counted on the warm-up image (torch's FlopCounterMode: matmuls, convolutions,
    attention), a training image costs 3 forward passes, and an explained image the number of forward passes its
    explain took in the CPU probe (explain time / forward time). Methods with extra
    stages (a teacher, self-supervised pre-training) take longer; a finished run's real timings replace this.
    Without split sizes in the config (data on disk), the estimate is per image.
    """
    from torch.utils.flop_counter import FlopCounterMode

    d = config["data"]
    s = int(d["image_size"])
    x = torch.rand(n_probe, 1, s, s, generator=torch.Generator().manual_seed(0))
    classes = list(BOX_FINDING_INDICES)
    if getattr(method, "image_size", 0) is None:
        method.image_size = s  # a network sized by the data (set by fit) is probed at the run's size
    try:
        method.init_untrained()
        # warm-up (lazy initialisation and first-call costs are not per-image costs), counting the forward's
        # FLOPs (under no_grad: the counter's module hooks would break an explainer's autograd.grad)
        with torch.no_grad(), FlopCounterMode(display=False) as counted:
            method.predict(x[:1])
        fwd_flops = float(counted.get_total_flops())
        method.explain(x[:1], classes)
        t0 = time.perf_counter()
        with torch.no_grad():
            method.predict(x)
        fwd = (time.perf_counter() - t0) / n_probe
        t0 = time.perf_counter()
        method.explain(x, classes)
        per_image = fwd + (time.perf_counter() - t0) / n_probe
    except Exception as exc:  # noqa: BLE001 - e.g. a method that cannot predict before it is fitted
        return f"not available before fitting ({type(exc).__name__})"
    threads = torch.get_num_threads()
    # explain costs the same multiple of a forward pass on the GPU as in the CPU probe
    per_image_flops = fwd_flops * per_image / max(fwd, 1e-9)
    gpu_note = (f"{fwd_flops / 1e9:.2f} GFLOP a forward pass, explain ≈ {per_image / max(fwd, 1e-9):.1f} forward "
                f"passes; {GPU_EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s + {GPU_BATCH_OVERHEAD_S * 1e3:.0f} ms a batch "
                "assumed: an estimate, see docs/harness.md")
    test = config.get("test_data", d)
    if not all(k in d for k in ("n_train", "n_val")) or "n_test" not in test:
        return (f"{per_image * 1e3:.1f} ms per test image to explain, {3 * fwd * 1e3:.1f} ms per training image per "
                f"epoch (CPU probe, {threads} thread{'s' if threads != 1 else ''})\n  GPU estimate: {per_image_flops / GPU_EFFECTIVE_FLOPS * 1e3:.2f} "
                f"ms per test image to explain, {3 * fwd_flops / GPU_EFFECTIVE_FLOPS * 1e3:.2f} ms per training image "
                f"per epoch ({gpu_note})")
    n_train, n_val, n_test = int(d["n_train"]), int(d["n_val"]), int(test["n_test"])
    ebs = int(config["explain"]["batch_size"])
    explain = (f"explain ≤ {duration(per_image * n_test)} (CPU probe of {n_probe} images, {threads} "
               f"thread{'s' if threads != 1 else ''})")
    gpu_explain = per_image_flops * n_test / GPU_EFFECTIVE_FLOPS + math.ceil(n_test / ebs) * GPU_BATCH_OVERHEAD_S
    if not trainable:  # a reference without a network (no FLOPs to count) gets no GPU line
        return explain + (f"\n  GPU estimate: explain ≈ {duration(gpu_explain)} ({gpu_note})" if fwd_flops else "")
    cap, patience, batch = fit_loop(method, config)
    low = min(cap, patience + 1)
    cpu_epoch = 3 * fwd * n_train + fwd * n_val
    gpu_epoch = ((3 * n_train + n_val) * fwd_flops / GPU_EFFECTIVE_FLOPS
                 + (math.ceil(n_train / batch) + math.ceil(n_val / batch)) * GPU_BATCH_OVERHEAD_S)

    def span(per_epoch: float) -> str:
        if low == cap:
            return f"{duration(per_epoch * cap)} ({cap} epochs)"
        return (f"{duration(per_epoch * low)}–{duration(per_epoch * cap)} ({low}–{cap} epochs: early stopping "
                f"with patience {patience}; {duration(per_epoch)} an epoch)")

    return (f"fit ≈ {span(cpu_epoch)}, {explain}"
            f"\n  GPU estimate: fit ≈ {span(gpu_epoch)}, explain ≈ {duration(gpu_explain)} ({gpu_note})")
