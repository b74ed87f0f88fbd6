"""The Lightning glue: learning, checkpoints (weights_only), exact resume, corrupt files, DDP on CPU."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from wsl_bench.methods import FitContext
from wsl_bench.training import ClassifierModule, load_weights, mean_auroc, train_module
from wsl_bench.training.trainer import default_precision


def tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 14))


def _fit(tmp: Path, splits, epochs: int, **kw):
    module = ClassifierModule(tiny_net(), lr=5e-2)
    best = train_module(module, *splits, FitContext(checkpoint_dir=tmp), max_epochs=epochs, batch_size=16, patience=50, **kw)
    return module, best


def test_mean_auroc_known_answers():
    labels = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 1], [1, 0, 1]])
    probs = np.array([[0.1, 0.9, 0.5], [0.2, 0.1, 0.5], [0.8, 0.2, 0.5], [0.9, 0.8, 0.5]])
    # column 0 perfectly ranked (1.0), column 1: pos .9,.2 vs neg .1,.8 -> 3 of 4 pairs = 0.75; column 2 skipped
    assert mean_auroc(probs, labels) == pytest.approx(0.875)
    assert mean_auroc(probs, np.ones_like(labels)) == 0.5  # no column with both values
    probs[0, 0] = np.nan  # NaN ranks lowest, never crashes
    assert 0.0 <= mean_auroc(probs, labels) <= 1.0


def test_trains_checkpoints_and_learns(tmp_path, tiny_splits):
    module, best = _fit(tmp_path, tiny_splits, epochs=6)
    assert best == tmp_path / "best.ckpt" and (tmp_path / "last.ckpt").exists()
    assert (tmp_path / "logs" / "version_0" / "metrics.csv").exists()
    state = torch.load(best, map_location="cpu", weights_only=True)  # data, never code
    assert state["callbacks"]
    val_x = tiny_splits[1].images
    with torch.no_grad():
        probs = torch.sigmoid(module(val_x)).numpy()
    assert mean_auroc(probs, tiny_splits[1].labels.numpy()) > 0.9
    fresh = ClassifierModule(tiny_net())
    load_weights(fresh, best)
    for a, b in zip(fresh.state_dict().values(), module.state_dict().values()):
        assert torch.equal(a, b)


def test_context_overrides_win_and_the_loop_that_ran_is_reported(tmp_path, tiny_splits):
    """ctx.max_epochs / ctx.batch_size override the arguments; ctx.extra says what ran (for manifests)."""
    ctx = FitContext(checkpoint_dir=tmp_path, max_epochs=1, batch_size=8)
    train_module(ClassifierModule(tiny_net()), *tiny_splits, ctx, max_epochs=5, batch_size=16)
    assert (ctx.extra["fit_max_epochs"], ctx.extra["fit_batch_size"], ctx.extra["fit_processes"]) == (1, 8, 1)
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and state["global_step"] == -(-len(tiny_splits[0]) // 8)  # one epoch (0-based)


def test_resume_from_last_equals_uninterrupted(tmp_path, tiny_splits):
    straight, _ = _fit(tmp_path / "a", tiny_splits, epochs=4)
    _fit(tmp_path / "b", tiny_splits, epochs=2)  # "killed" after 2 epochs
    resumed, _ = _fit(tmp_path / "b", tiny_splits, epochs=4)  # same call again with the full budget
    ra = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)
    rb = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert ra["global_step"] == rb["global_step"] == 4 * 6
    for k in ra["state_dict"]:
        assert torch.equal(ra["state_dict"][k], rb["state_dict"][k]), k


def test_corrupt_or_code_carrying_last_ckpt_is_not_trusted(tmp_path, tiny_splits):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="could not be loaded safely"):
        _fit(tmp_path, tiny_splits, epochs=1)
    assert (tmp_path / "last.ckpt.corrupt").exists()
    torch.save({"state_dict": {}, "evil": Path("x")}, tmp_path / "last.ckpt")  # a pickled object, not data
    with pytest.warns(UserWarning, match="could not be loaded safely"):
        _fit(tmp_path, tiny_splits, epochs=1)


def test_subclass_losses_are_used(tmp_path, tiny_splits):
    seen = []

    class Extra(ClassifierModule):
        def compute_loss(self, batch, outputs):
            loss, logs = super().compute_loss(batch, outputs)
            penalty = outputs.pow(2).mean() * 1e-3
            seen.append(float(penalty.detach()))
            return loss + penalty, {**logs, "penalty": penalty.detach()}

    train_module(Extra(tiny_net()), *tiny_splits, FitContext(checkpoint_dir=tmp_path), max_epochs=1, batch_size=32)
    assert len(seen) >= 3  # 3 training batches + validation batches
    log = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train_penalty" in log and "val_mean_auroc" in log


def test_precision_defaults():
    assert default_precision(FitContext(checkpoint_dir=Path("."), accelerator="cpu")) == "32-true"
    assert default_precision(FitContext(checkpoint_dir=Path("."), accelerator="gpu")) == "bf16-mixed"
    assert default_precision(FitContext(checkpoint_dir=Path("."), accelerator="gpu", precision="16-mixed")) == "16-mixed"


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import TinyLabelled
    from wsl_bench.methods import FitContext
    from wsl_bench.training import ClassifierModule, train_module
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 14))
    ctx = FitContext(checkpoint_dir=Path({ck!r}), accelerator="cpu", devices=2, strategy="ddp")
    module = ClassifierModule(net, lr=5e-2)
    best = train_module(module, TinyLabelled(64, 0), TinyLabelled(32, 1), ctx, max_epochs=2, batch_size=8)
    # one write per line: the two ranks share the pipe, and print's separate pieces would interleave
    sys.stdout.write(f"RANK {{module.global_rank}} WORLD {{module.trainer.world_size}} STEP {{module.trainer.global_step}} {{best.name}}\\n")
    sys.stdout.flush()
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), ck=str(tmp_path / "ck")))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = sorted(l for l in proc.stdout.splitlines() if l.startswith("RANK"))
    # batch_size is the global batch: each rank takes 4 of its 32 images per step, so 8 steps per epoch,
    # as one process takes on 64 images in batches of 8
    assert lines == ["RANK 0 WORLD 2 STEP 16 best.ckpt", "RANK 1 WORLD 2 STEP 16 best.ckpt"], proc.stdout
    state = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 16
    # Without BatchNorm or randomness in the step, DDP is the 1-process recipe: step k averages the gradient over
    # the same 8 images (rank r takes images r, r+2, ... of the same seeded permutation) with the same learning
    # rate, so the weights agree up to float summation order. A doubled global batch or a rank training on its
    # own half without gradient averaging would move them by far more.
    from conftest import TinyLabelled

    module = ClassifierModule(tiny_net(), lr=5e-2)
    train_module(module, TinyLabelled(64, 0), TinyLabelled(32, 1), FitContext(checkpoint_dir=tmp_path / "one", accelerator="cpu"),
                 max_epochs=2, batch_size=8)
    one = torch.load(tmp_path / "one" / "last.ckpt", weights_only=True)
    assert one["global_step"] == 16
    for k, v in one["state_dict"].items():
        assert torch.allclose(v, state["state_dict"][k], atol=1e-5, rtol=0), (k, (v - state["state_dict"][k]).abs().max())


def test_per_rank_batch_keeps_the_global_batch():
    from wsl_bench.training.trainer import per_rank_batch_size

    assert per_rank_batch_size(32, 1) == 32
    assert per_rank_batch_size(32, 2) == 16
    assert per_rank_batch_size(64, 8) == 8
    with pytest.warns(UserWarning, match="not a multiple of the 3 processes; each takes 11"):
        assert per_rank_batch_size(32, 3) == 11
    with pytest.warns(UserWarning, match="each takes 1"):
        assert per_rank_batch_size(2, 4) == 1  # never an empty batch


def test_val_auroc_counts_each_image_once(monkeypatch):
    """DDP pads the last validation shard with repeats; the AUROC must be that of the unique images."""
    from types import SimpleNamespace

    monkeypatch.setattr(ClassifierModule, "trainer", property(lambda self: SimpleNamespace(world_size=1)))
    labels = torch.tensor([[1.0] * 14, [0.0] * 14, [1.0] * 14, [0.0] * 14])
    probs = torch.tensor([0.9, 0.2, 0.3, 0.4])
    module = ClassifierModule(tiny_net())
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    module.on_validation_epoch_start()
    for rows in ([0, 1], [2, 3], [2, 2]):  # the last "shard" repeats image 2, a wrongly ranked positive
        module._val_probs.append(probs[rows, None].expand(-1, 14))
        module._val_labels.append(labels[rows])
        module._val_index.append(torch.tensor(rows))
    module.on_validation_epoch_end()
    # positives 0.9, 0.3 vs negatives 0.2, 0.4: 3 of 4 pairs ranked right; counting image 2 three times gives 5/8
    assert logged["val_mean_auroc"] == pytest.approx(0.75)


def test_compile_and_channels_last_options_reach_the_module_and_train(tmp_path, tiny_splits):
    from wsl_bench.training.trainer import use_channels_last

    assert use_channels_last(FitContext(checkpoint_dir=tmp_path, accelerator="gpu"))  # default: on GPU only
    assert not use_channels_last(FitContext(checkpoint_dir=tmp_path, accelerator="cpu"))
    seen = []

    class Conv(ClassifierModule):
        def training_step(self, batch, batch_idx):
            seen.append(batch["image"].is_contiguous(memory_format=torch.channels_last))
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(64, 14))
    module = Conv(net, lr=5e-2)
    ctx = FitContext(checkpoint_dir=tmp_path / "fast", accelerator="cpu", compile="aot_eager", channels_last=True)
    best = train_module(module, *tiny_splits, ctx, max_epochs=2, batch_size=16, patience=50)
    assert module._compiled_call_impl is not None and seen and all(seen)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = ClassifierModule(copy.deepcopy(net))
    load_weights(plain, best)  # compiling in place keeps parameter names: checkpoints load into a plain module
    with torch.no_grad():
        x = tiny_splits[1].images
        assert torch.allclose(plain(x), module(x), atol=1e-5)
    assert mean_auroc(torch.sigmoid(plain(x)).detach().numpy(), tiny_splits[1].labels.numpy()) > 0.6


def test_last_ckpt_follows_every_epoch_even_without_improvement(tmp_path, tiny_splits):
    """A killed run resumes from the last finished epoch, not from the best one."""
    module = ClassifierModule(tiny_net(), lr=0.0)  # never learns: validation never improves after epoch 0
    train_module(module, *tiny_splits, FitContext(checkpoint_dir=tmp_path), max_epochs=3, batch_size=16, patience=50)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "best.ckpt", weights_only=True)
    assert last["global_step"] == 3 * 6 and last["epoch"] == 2
    assert best["global_step"] == 6  # the first epoch's score was never beaten


def test_sigterm_stops_the_fit_with_a_failure_status_and_the_same_call_resumes(tmp_path, tiny_splits):
    """Lightning ends a SIGTERM'd fit with status 0; ours exits 143 so no script takes the run for done."""
    import os
    import signal

    from lightning.pytorch.callbacks import Callback

    from wsl_bench.training.trainer import SIGTERM_EXIT_STATUS

    class TermAfterEpoch1(Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as stop:
        _fit(tmp_path, tiny_splits, epochs=4, callbacks=[TermAfterEpoch1()])
    assert stop.value.code == SIGTERM_EXIT_STATUS == 143
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 1
    _fit(tmp_path, tiny_splits, epochs=4)  # the same call again finishes the fit
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4 * 6
