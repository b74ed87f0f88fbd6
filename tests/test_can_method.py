"""CAN as a wsl-bench method: network contract, fit through the harness, persistence, errors, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.can import CAN, CANNet, build_can_module
from wsl_bench.methods import FitContext, available_methods, create_method

from toy_reports import BOX_CLASSES, ToyReports

SLIM = [8, 8, 16, 16]
TINY = {"backbone_a": "resnet18", "backbone_b": "resnet10t", "channels_a": SLIM, "channels_b": SLIM,
        "feature_dim": 16, "output_stride": 16, "lr": 3e-3, "max_epochs": 1, "batch_size": 8}


def tiny_net(cross: str = "product") -> CANNet:
    return CANNet("resnet18", "resnet10t", 16, cross, 16, channels_a=SLIM, channels_b=SLIM)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    method = create_method("can", TINY)
    ckpt = tmp_path_factory.mktemp("can")
    method.fit(ToyReports(24, 0), ToyReports(16, 1), FitContext(checkpoint_dir=ckpt, seed=0))
    return method, ckpt


def test_registered_with_presets_and_ablations():
    info = available_methods()["can"]
    assert info.cls is CAN
    assert set(CAN.presets) == {"quick", "standard", "paper"}
    assert CAN.ablations["cross_attention"] == {"cross": "sum"}


@pytest.mark.parametrize("cross", ["product", "gate", "sum"])
def test_cross_attention_and_cam_contract(cross):
    torch.manual_seed(0)
    net = tiny_net(cross).eval()
    x = torch.rand(2, 1, 64, 64)
    a, b, z = net.features(x)
    expected = {"product": a * b, "gate": a * torch.sigmoid(b) + b * torch.sigmoid(a), "sum": a + b}[cross]
    assert torch.allclose(z, expected)
    out = net(x)
    assert out["cam"].shape == (2, 14, 4, 4)  # output stride 16 at 64 px
    # CAM with average pooling: each logit is exactly the mean of its class map
    assert torch.allclose(out["logits"], out["cam"].mean((2, 3)), atol=1e-6)
    assert torch.allclose(out["logits_a"], out["cam_a"].mean((2, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="cross"):
        tiny_net("concat")


def test_product_gates_away_evidence_one_branch_lacks():
    net = tiny_net("product").eval()
    with torch.no_grad():
        for m in net.proj_b.modules():  # silence branch b: the product then carries nothing
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.zero_()
                m.bias.fill_(-1.0)
        _, b, z = net.features(torch.rand(1, 1, 64, 64))
    assert torch.count_nonzero(b) == 0 and torch.count_nonzero(z) == 0


def test_fit_predict_explain_and_round_trip(fitted, tmp_path):
    method, ckpt = fitted
    images = ToyReports(3, 5).images
    probs = method.predict(images)
    assert probs.shape == (3, 14) and bool(((probs >= 0) & (probs <= 1)).all())
    maps = method.explain(images, [1, 6])
    assert maps.shape == (3, 2, 4, 4) and bool(torch.isfinite(maps).all())
    assert (ckpt / "can.safetensors").is_file() and (ckpt / "best.ckpt").is_file()
    other = create_method("can", {})
    other.load(ckpt)
    assert other.config["channels_a"] == SLIM
    assert torch.allclose(other.predict(images), probs, atol=1e-6)
    assert torch.allclose(other.explain(images, [1, 6]), maps, atol=1e-6)


def test_module_uses_the_can_loss():
    net = tiny_net()
    cfg = {**CAN.presets["quick"], "balance": "dataset", "focal_gamma": 2.0, "max_weight": 20.0,
           "w_branch": 0.5, "w_agree": 0.1, "lr": 1e-3, "weight_decay": 0.0}
    module = build_can_module(net, cfg, torch.full((14,), 0.2))
    data = ToyReports(4, 0)
    batch = {"image": data.images, "labels": torch.from_numpy(data.labels), "index": torch.arange(4)}
    loss, logs = module.compute_loss(batch, module(batch["image"]))
    assert set(logs) == {"balance", "branch", "agree"} and torch.isfinite(loss)


def test_bad_configs_and_states_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown can config"):
        create_method("can", {"gamma": 1})
    with pytest.raises(RuntimeError, match="not trained"):
        create_method("can", TINY).explain(torch.zeros(1, 1, 64, 64), [0])
    with pytest.raises(FileNotFoundError, match="not a CAN checkpoint"):
        create_method("can", {}).load(tmp_path)
    with pytest.raises(FileNotFoundError, match="image_weights|does not exist"):
        create_method("can", {**TINY, "weights_a": str(tmp_path / "x.pth")}).build()


@pytest.mark.slow
def test_paper_preset_shapes_and_one_step():
    """Paper preset: DenseNet-121 x ResNet-50 at 224 px, one optimisation step on CPU."""
    method = create_method("can", {}, preset="paper")
    net = method.build()
    module = build_can_module(net, method.config, torch.full((14,), 0.05))
    x = torch.rand(2, 1, 224, 224)
    labels = torch.zeros(2, 14)
    labels[0, 3] = 1
    out = module(x)
    assert out["cam"].shape == (2, 14, 7, 7) and out["logits"].shape == (2, 14)
    opt = module.configure_optimizers()
    before = net.head.weight.detach().clone()
    loss, _ = module.compute_loss({"image": x, "labels": labels, "index": torch.arange(2)}, out)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, net.head.weight)


@pytest.mark.slow
def test_learns_the_toy_cohort(tmp_path):
    from sklearn.metrics import roc_auc_score


    torch.manual_seed(0)
    method = create_method("can", {**TINY, "max_epochs": 6, "batch_size": 16})
    method.fit(ToyReports(192, 0), ToyReports(48, 1), FitContext(checkpoint_dir=tmp_path, seed=0))
    test = ToyReports(96, 2)
    probs = method.predict(test.images).numpy()
    aucs = [roc_auc_score(test.labels[:, c], probs[:, c]) for c in BOX_CLASSES if 0 < test.labels[:, c].sum() < 96]
    assert np.mean(aucs) > 0.7
