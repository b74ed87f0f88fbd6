"""Every registered method has the quick, standard and paper presets, and each resolves to a valid config;
the standard preset trains to early stopping, keeps the shared ResNet shared and explains at stride 16."""

from __future__ import annotations

import pytest
import torch

from wsl_bench.methods import available_methods, create_method, resolve_config
from wsl_bench.stages.estimates import fit_loop as _fit_loop
from wsl_bench.settings import method_known_keys, method_problems

METHODS = sorted(available_methods())  # the entry-point packages' methods (references included)
PRESETS = ("quick", "standard", "paper")
# one ResNet-18 trained once per run and loaded by the others (share_checkpoint="auto")
RESNET_SHARERS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam",
                  "integrated-gradients", "occlusion")


def test_the_registry_holds_the_shipped_methods_and_references():
    assert {"clarity", "gradcam", "can", "afloc", "rollout", "prior-center", "prior-lung", "random",
            "oracle-seg", *RESNET_SHARERS} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_has_quick_standard_and_paper_presets_that_validate(name):
    info = available_methods()[name]
    assert set(PRESETS) <= set(info.cls.presets), name
    for preset in PRESETS:
        # the settings check (wsl_bench.settings), which runs the class's check_config when it has one
        assert method_problems(name, info, preset, {}) == [], (name, preset)
        create_method(name, resolve_config(name, preset))  # constructors validate their keys too
    check = getattr(info.cls, "check_config", None)
    if callable(check):
        check(resolve_config(name, "standard"))


@pytest.mark.parametrize("name", [m for m in METHODS if available_methods()[m].cls.trainable])
def test_standard_trains_with_an_epoch_cap_and_early_stopping(name):
    info = available_methods()[name]
    preset = info.cls.presets["standard"]
    cap = preset.get("max_epochs", preset.get("epochs"))
    assert isinstance(cap, int) and 10 <= cap <= 30, (name, cap)
    if "patience" in method_known_keys(info):  # the references have no key
        assert preset.get("patience") == 3, name
    loop_cap, patience, _ = _fit_loop(create_method(name, resolve_config(name, "standard")), {"fit": {}})
    assert loop_cap == cap and 1 <= patience < cap, name


def test_the_fit_loop_the_estimate_uses():
    clarity = create_method("clarity", resolve_config("clarity", "standard"))
    assert _fit_loop(clarity, {"fit": {}}) == (20, 3, 32)  # CLARiTy's `epochs` is its cap
    assert _fit_loop(create_method("clarity", resolve_config("clarity", "quick")), {"fit": {}}) == (2, 5, 32)
    assert _fit_loop(clarity, {"fit": {"max_epochs": 4, "batch_size": 8}}) == (4, 3, 8)  # the run's fit.* wins
    assert _fit_loop(create_method("can", resolve_config("can", "standard")), {"fit": {}}) == (20, 3, 32)
    assert _fit_loop(create_method("can", resolve_config("can", "quick")), {"fit": {}}) == (2, 5, 32)  # default patience


@pytest.mark.parametrize("preset", PRESETS)
def test_the_resnet_methods_share_one_network_in_every_preset(preset):
    class Split:
        image_ids, labels = ["a", "b"], [[0.0] * 14, [1.0] * 14]

        def __len__(self):
            return 2

    from wsl_bench.methods import FitContext

    ctx = FitContext(checkpoint_dir=".", image_size=224)
    keys = set()
    for name in RESNET_SHARERS:
        m = create_method(name, resolve_config(name, preset))
        m.image_size = 224
        assert m.config["share_checkpoint"] == "auto", name
        keys.add(m.training_key(Split(), Split(), ctx))
    assert len(keys) == 1, preset


@pytest.mark.parametrize("name", ["gradcam", "cam-wang2017", "gradcam-convnextv2", "rollout", "hybrid-gradcam",
                                  "clarity"])
def test_standard_maps_are_14x14_at_224_px(name):
    torch.manual_seed(0)
    m = create_method(name, resolve_config(name, "standard"))
    if hasattr(m, "image_size"):
        m.image_size = 224  # what fit sets from the data
    maps = m.explain(torch.rand(1, 1, 224, 224), [1, 4])
    assert tuple(maps.shape) == (1, 2, 14, 14), name


def test_standard_occlusion_pools_its_16_px_cells_without_loss():
    """Windows of 32 px every 16 px make the attribution constant on 16-px cells, so `pool: 16` keeps it all."""
    torch.manual_seed(0)
    conf = {**resolve_config("occlusion", "standard"), "normalize": "none"}
    assert (conf["window"], conf["stride"], conf["pool"]) == (32, 16, 16)
    fine = create_method("occlusion", {**conf, "pool": 1})
    fine.image_size = 64
    x = torch.rand(2, 1, 64, 64)
    full = fine.explain(x, [1, 4])
    pooled = create_method("occlusion", conf)
    pooled.net = fine.net
    coarse = pooled.explain(x, [1, 4])
    assert tuple(coarse.shape) == (2, 2, 4, 4)
    torch.testing.assert_close(full, coarse.repeat_interleave(16, 2).repeat_interleave(16, 3), rtol=1e-5, atol=1e-7)
