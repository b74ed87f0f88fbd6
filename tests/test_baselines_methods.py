"""Every registered baseline through the method protocol on a tiny cohort: fit (with backbone
sharing), predict, explain for all classes in a batch, save/load round trips, presets, and the
error paths (missing weights, wrong shared checkpoint)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from captum.attr import IntegratedGradients, Occlusion
from torch import nn

import baselines  # noqa: F401 - registers the methods
from baselines._backbones import create_timm, load_local_weights
from baselines._trainable import CONFIG_FILE, WEIGHTS_FILE
from baselines.attributions import IntegratedGradientsMethod, OcclusionMethod
from wsl_bench.data.schema import CXRDataset
from wsl_bench.labels import BOX_FINDING_INDICES
from wsl_bench.methods import FitContext, available_methods, create_method

S = 32  # image side of the tiny cohort


class ToyCohort(CXRDataset):
    """In-memory grayscale images with a bright square where finding c is present."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        labels = (rng.random((n, 14)) < 0.3).astype(np.float32)
        imgs = rng.random((n, S, S), dtype=np.float32) * 0.2
        for c in range(8):
            y, x = (c // 4) * 16 + 4, (c % 4) * 8
            imgs[labels[:, c] > 0, y : y + 8, x : x + 6] += 0.7
        self.imgs = imgs
        super().__init__([f"t{seed}_{i}" for i in range(n)], [f"p{i}" for i in range(n)], labels,
                         np.full((n, 2), S), S)

    def _load_image(self, i):
        return self.imgs[i]


OURS = sorted(
    name
    for name, info in available_methods().items()
    if info.cls.__module__ in ("baselines.cam", "baselines.vit", "baselines.hybrid", "baselines.attributions")
)

# Tiny settings per family so the whole protocol runs in seconds on 2 cores.
TINY = {"max_epochs": 1, "batch_size": 16, "explain_batch_size": 4}


def tiny_config(name: str) -> dict:
    cfg = dict(TINY)
    if name in ("rollout", "grad-rollout", "vit-attention", "vit-gradcam"):
        cfg.update(patch_size=8, reg_tokens=1)
    if name.startswith("hybrid"):
        cfg.update(cnn_stage=2, depth=2)
    if name == "occlusion":
        cfg.update(window=8, stride=8)
    if name == "integrated-gradients":
        cfg.update(n_steps=4, pool=2)
    if name == "scorecam":
        cfg.update(score_cam_channels=8)
    return cfg


@pytest.fixture(scope="module")
def cohort():
    return ToyCohort(32, 0), ToyCohort(16, 1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("baselines_run")


def fit(name, cohort, run_dir, **extra):
    torch.set_num_threads(1)
    m = create_method(name, tiny_config(name) | extra, preset="quick")
    m.fit(*cohort, FitContext(checkpoint_dir=run_dir / "checkpoints" / name, run_dir=run_dir, seed=0, image_size=S))
    return m


def test_every_baseline_is_listed_with_description_paper_and_both_presets():
    expected = {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam", "cam-wang2017",
                "gradcam-densenet121", "gradcam-convnextv2", "rollout", "grad-rollout", "vit-attention", "vit-gradcam",
                "hybrid-gradcam", "hybrid-rollout", "integrated-gradients", "occlusion"}
    assert expected <= set(OURS)
    infos = available_methods()
    for name in OURS:
        info = infos[name]
        assert info.description and info.paper, name
        assert {"quick", "paper"} <= set(info.cls.presets), name


@pytest.mark.parametrize("name", OURS)
def test_protocol_fit_predict_explain_save_load(name, cohort, run_dir):
    m = fit(name, cohort, run_dir)
    x = torch.from_numpy(cohort[1].imgs[:5, None].copy())
    probs = m.predict(x)
    assert probs.shape == (5, 14) and bool(((probs >= 0) & (probs <= 1)).all())
    classes = list(BOX_FINDING_INDICES)
    maps = m.explain(x, classes)
    assert maps.ndim == 4 and maps.shape[:2] == (5, 8)
    assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6
    # batching is invisible: one image at a time gives the same maps (occlusion differences of an
    # untrained net are tiny logit gaps, so float noise of batched convs shows after normalising)
    m.config["explain_batch_size"] = 1
    tol = 5e-3 if name == "occlusion" else 1e-4
    torch.testing.assert_close(m.explain(x, classes), maps, rtol=tol, atol=tol)
    # a fresh instance loads what fit wrote and explains identically
    ckdir = run_dir / "checkpoints" / name
    assert (ckdir / WEIGHTS_FILE).is_file()
    again = create_method(name, tiny_config(name), preset="quick")
    again.load(ckdir)
    torch.testing.assert_close(again.explain(x, classes), maps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again.predict(x), probs, rtol=1e-5, atol=1e-5)


def test_cam_variants_share_one_trained_backbone(cohort, run_dir):
    first = fit("gradcam", cohort, run_dir)
    second = fit("hirescam", cohort, run_dir)
    assert second.fit_info["trained"] is False and "shared" in second.fit_info["shared_from"]
    for (k, a), b in zip(first.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(a, b), k
    # a different training config is a different backbone
    third = fit("layercam", cohort, run_dir, lr=0.01, share_checkpoint="auto")
    assert third.fit_info["trained"] is True


def test_model_config_records_the_epochs_and_batch_that_ran(cohort, tmp_path):
    """A run's fit.max_epochs / fit.batch_size override the method config; the checkpoint's JSON says what ran."""
    m = create_method("gradcam", {**TINY, "max_epochs": 3}, preset="quick")
    ctx = FitContext(checkpoint_dir=tmp_path / "ck", run_dir=tmp_path, seed=0, image_size=S, max_epochs=1, batch_size=8)
    m.fit(*cohort, ctx)
    saved = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    assert saved["max_epochs"] == 3  # the method's own config, kept for load
    assert saved["fit"]["max_epochs"] == 1 and saved["fit"]["batch_size"] == 8 and saved["fit"]["trained"] is True


def test_share_checkpoint_by_name_and_its_errors(cohort, run_dir):
    fit("gradcam", cohort, run_dir)
    named = fit("xgradcam", cohort, run_dir, share_checkpoint="gradcam")
    assert named.fit_info["shared_from"].endswith("gradcam")
    with pytest.raises(FileNotFoundError, match="share_checkpoint='nope'"):
        fit("xgradcam", cohort, run_dir, share_checkpoint="nope")
    with pytest.raises(ValueError, match="arch"):
        fit("gradcam-densenet121", cohort, run_dir, share_checkpoint="gradcam")


def test_load_refuses_other_architecture_and_missing_files(cohort, run_dir, tmp_path):
    fit("gradcam", cohort, run_dir)
    other = create_method("gradcam", {"arch": "resnet10t"})
    with pytest.raises(ValueError, match="arch"):
        other.load(run_dir / "checkpoints" / "gradcam")
    with pytest.raises(FileNotFoundError, match="fit the method first"):
        other.load(tmp_path)
    saved = json.loads((run_dir / "checkpoints" / "gradcam" / CONFIG_FILE).read_text())
    assert saved["arch"] == "resnet18" and saved["image_size"] == S


def test_local_weights_file_loads_and_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        create_timm("resnet18", weights=str(tmp_path / "absent.pth"))
    rgb = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # an ImageNet-shaped state
    torch.save(rgb.state_dict(), tmp_path / "r18.pth")
    model = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=14)
    report = load_local_weights(model, tmp_path / "r18.pth")
    assert "conv1.weight" in report["loaded"] and "fc.weight" in report["skipped"]
    torch.testing.assert_close(model.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_timm("resnet_does_not_exist")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                               nn.Linear(16, 14))

    def forward(self, x):
        return self.f(x)


def test_occlusion_one_sweep_equals_captum_per_class():
    net = _Tiny().eval()
    x = torch.rand(3, 1, 16, 16)
    classes = [0, 5, 7]
    m = OcclusionMethod({"window": 4, "stride": 2, "perturbations_per_eval": 8})
    got = m.attribute(net, x, classes)
    for j, c in enumerate(classes):
        ref = Occlusion(net).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0, target=c)
        torch.testing.assert_close(got[:, j], ref[:, 0], rtol=1e-5, atol=1e-6)


def test_integrated_gradients_batched_equals_per_class_and_is_complete():
    net = _Tiny().eval()
    x = torch.rand(2, 1, 8, 8)
    classes = [1, 3]
    m = IntegratedGradientsMethod({"n_steps": 64, "internal_batch_size": 256})
    got = m.attribute(net, x, classes)
    for j, c in enumerate(classes):
        ref = IntegratedGradients(net).attribute(x, baselines=torch.zeros_like(x), target=c, n_steps=64)
        torch.testing.assert_close(got[:, j], ref[:, 0], rtol=1e-4, atol=1e-6)
        # completeness: attributions sum to f(x) - f(baseline)
        with torch.no_grad():
            gap = net(x)[:, c] - net(torch.zeros_like(x))[:, c]
        torch.testing.assert_close(got[:, j].sum((1, 2)), gap, rtol=1e-2, atol=1e-3)


PAPER_NAMES = ["gradcam", "gradcam-densenet121", "gradcam-convnextv2", "cam-wang2017", "rollout", "hybrid-gradcam"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_NAMES)
def test_paper_preset_builds_takes_one_step_and_explains(name):
    """Paper settings (ResNet-50, DenseNet-121, ConvNeXtV2-B, ViT-S/16, R50+ViT-S): shapes and one step."""
    torch.manual_seed(0)
    m = create_method(name, preset="paper")
    m.image_size = 64
    net = m.ensure_net()
    x = torch.rand(2, 1, 64, 64)
    opt = torch.optim.AdamW(net.parameters(), lr=float(m.config["lr"]))
    net.train()
    loss = nn.functional.binary_cross_entropy_with_logits(net(x), torch.ones(2, 14))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    net.eval()
    maps = m.explain(x, [0, 1])
    assert maps.shape[:2] == (2, 2) and bool(torch.isfinite(maps).all())


def test_vit_conv_patch_stem_trains_explains_and_round_trips(cohort, tmp_path):
    """patch_stem='conv' (the ViT baselines' standard preset): stride-2 convs replace the patchify, the token grid
    stays, and a fresh instance rebuilds the stem from the saved config."""
    torch.set_num_threads(1)
    m = create_method("rollout", tiny_config("rollout") | {"patch_stem": "conv"}, preset="quick")
    m.fit(*cohort, FitContext(checkpoint_dir=tmp_path / "rollout", run_dir=tmp_path, seed=0, image_size=S))
    stem = m.net.model.patch_embed.proj
    assert [c.stride[0] for c in stem if isinstance(c, torch.nn.Conv2d)] == [2, 2, 2, 1]
    x = torch.from_numpy(cohort[1].imgs[:3, None].copy())
    maps = m.explain(x, list(BOX_FINDING_INDICES))
    assert maps.shape[:2] == (3, 8) and bool(torch.isfinite(maps).all())
    again = create_method("rollout", tiny_config("rollout"), preset="quick")  # linear by default
    again.load(tmp_path / "rollout")
    torch.testing.assert_close(again.explain(x, list(BOX_FINDING_INDICES)), maps, rtol=1e-4, atol=1e-4)
    infos = available_methods()
    for name in ("rollout", "grad-rollout", "vit-attention", "vit-gradcam"):
        assert infos[name].cls.presets["standard"]["patch_stem"] == "conv", name
        for preset in ("quick", "paper"):  # keep the patchify, and the configs they had before the key existed
            assert "patch_stem" not in {**infos[name].cls.base_defaults, **infos[name].cls.presets[preset]}, name
    with pytest.raises(ValueError, match="patch_stem"):
        create_method("rollout", tiny_config("rollout") | {"patch_stem": "resnet"}, preset="quick")
    from wsl_bench.settings import method_known_keys

    assert "patch_stem" in method_known_keys(infos["rollout"])
    assert "patch_stem" not in method_known_keys(infos["hybrid-gradcam"])  # its CNN trunk is its stem: refused


def test_vit_standard_warmup_steps_the_rate_per_batch(cohort, tmp_path):
    """warmup_frac (the ViT baselines' and hybrids' standard preset): warm-up then cosine to ~0 by the epoch cap,
    stepped per batch; absent, the rate stays constant (quick and paper, as before the key existed)."""
    torch.set_num_threads(1)
    for name, extra, ck in (("rollout", {"warmup_frac": 0.25}, "warm"), ("rollout", {}, "flat")):
        m = create_method(name, tiny_config(name) | {"max_epochs": 2, "share_checkpoint": "none"} | extra, preset="quick")
        m.fit(*cohort, FitContext(checkpoint_dir=tmp_path / ck, run_dir=tmp_path, seed=0, image_size=S))
    state = torch.load(tmp_path / "warm" / "last.ckpt", map_location="cpu", weights_only=True)
    sched = state["lr_schedulers"][0]
    assert sched["last_epoch"] == 4  # 2 epochs x 2 batches of 16
    assert sched["base_lrs"] == [create_method("rollout", tiny_config("rollout"), preset="quick").config["lr"]]
    assert sched["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)
    assert torch.load(tmp_path / "flat" / "last.ckpt", map_location="cpu", weights_only=True)["lr_schedulers"] == []
    for name in ("rollout", "vit-gradcam", "hybrid-gradcam", "hybrid-rollout"):
        assert available_methods()[name].cls.presets["standard"]["warmup_frac"] == 0.1, name
    with pytest.raises(ValueError, match="warmup_frac"):
        fit("rollout", cohort, tmp_path / "bad", warmup_frac=1.5, share_checkpoint="none")
