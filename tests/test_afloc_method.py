"""AFLoc as a wsl-bench method: registration, fit through the harness, persistence, errors, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.afloc import AFLoc, FINDING_PHRASES, refresh_prompts
from toy_reports import BOX_CLASSES, ToyReports  # shared with tests/test_can_method.py
from wsl_bench.labels import FINDINGS
from wsl_bench.methods import FitContext, available_methods, create_method

TINY = {"backbone": "resnet18", "backbone_channels": [8, 8, 16, 16], "embed_dim": 16, "input_size": None,
        "text_mode": "frozen", "text_center": True, "lr": 3e-3, "weight_decay": 0.0, "lr_gamma": 1.0, "max_epochs": 1, "batch_size": 8}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    method = create_method("afloc", TINY)
    ckpt = tmp_path_factory.mktemp("afloc")
    method.fit(ToyReports(24, 0), ToyReports(16, 1), FitContext(checkpoint_dir=ckpt, seed=0))
    return method, ckpt


def test_registered_with_presets():
    info = available_methods()["afloc"]
    assert info.cls is AFLoc
    assert set(AFLoc.presets) == {"quick", "standard", "paper"}
    assert set(AFLoc.ablations) == {"word_loss", "sentence_loss", "report_loss"}


def test_fit_predict_explain_shapes(fitted):
    method, ckpt = fitted
    images = ToyReports(3, 5).images
    probs = method.predict(images)
    assert probs.shape == (3, 14) and bool(((probs >= 0) & (probs <= 1)).all())
    maps = method.explain(images, [0, 2, 7])
    assert maps.shape == (3, 3, 4, 4) and bool(torch.isfinite(maps).all())  # layer3 grid at 64 px
    assert method.metadata["reports_source"] == "dataset"
    assert (ckpt / "afloc.safetensors").is_file() and (ckpt / "logs").is_dir()


def test_save_load_round_trip(fitted, tmp_path):
    method, ckpt = fitted
    images = ToyReports(2, 7).images
    other = create_method("afloc", {})
    other.load(ckpt)
    assert other.config["backbone_channels"] == TINY["backbone_channels"]
    assert torch.allclose(other.predict(images), method.predict(images), atol=1e-6)
    assert torch.allclose(other.explain(images, [1]), method.explain(images, [1]), atol=1e-6)
    # a checkpoint named in the config is loaded instead of training
    third = create_method("afloc", {"checkpoint": str(ckpt)})
    third.fit(None, None, FitContext(checkpoint_dir=tmp_path / "c"))
    assert torch.allclose(third.predict(images), method.predict(images), atol=1e-6)
    assert "loaded from" in third.metadata["trained_on"]


def test_prompts_drive_the_maps(fitted):
    # the localization map of class c is the (smoothed) dot product with prompt c's embedding, minus the one
    # with its negative prompt's embedding (loc_contrast "negative"; "none" is the official map)
    method, _ = fitted
    net = method.net
    images = ToyReports(2, 3).images
    with torch.no_grad():
        _, sents, _ = net.image(images)
        text = net.project_text(net.prompt_loc[[4]])
        neg = net.project_text(net.prompt_neg[[4]]).mean(1)
        official = torch.einsum("bdhw,kd->bkhw", sents, text)
        contrast = official - torch.einsum("bdhw,kd->bkhw", sents, neg)
    net.sigma = 0.0
    try:
        assert torch.allclose(method.explain(images, [4]), contrast, atol=1e-4)
        net.loc_contrast = "none"
        assert torch.allclose(method.explain(images, [4]), official, atol=1e-4)
    finally:
        net.sigma, net.loc_contrast = 1.5, "negative"


def test_report_level_maps_decompose_the_zero_shot_score(fitted):
    # loc_level "report": with the localization prompt as the positive prompt and no smoothing, the spatial
    # mean of each map x temp3 is exactly the zero-shot logit
    method, _ = fitted
    net = method.net
    images = ToyReports(3, 4).images
    saved = net.sigma, net.loc_level, net.prompt_pos.clone()
    net.sigma, net.loc_level = 0.0, "report"
    try:
        net.prompt_pos.copy_(net.prompt_loc[:, None].expand_as(net.prompt_pos))
        maps = method.explain(images, list(range(14)))
        with torch.no_grad():
            logits = net.zero_shot_logits(net.image(images)[2])
        assert torch.allclose(maps.mean((2, 3)) * net.temp3, logits, atol=1e-4)
    finally:
        net.sigma, net.loc_level = saved[0], saved[1]
        net.prompt_pos.copy_(saved[2])


def test_class_contrasts_sum_over_the_findings(fitted):
    # loc_contrast "classes": each location's similarities centred over the 14 prompts (sum 0);
    # "softmax": a distribution over the 14 prompts at each location (sum 1)
    method, _ = fitted
    net = method.net
    images = ToyReports(2, 6).images
    saved = net.sigma, net.loc_contrast
    try:
        net.sigma, net.loc_contrast = 0.0, "classes"
        assert torch.allclose(method.explain(images, list(range(14))).sum(1), torch.zeros(2, 4, 4), atol=1e-4)
        net.loc_contrast = "softmax"
        maps = method.explain(images, list(range(14)))
        assert torch.allclose(maps.sum(1), torch.ones(2, 4, 4), atol=1e-5) and bool((maps >= 0).all())
        assert torch.allclose(method.explain(images, [3, 9]), maps[:, [3, 9]])
    finally:
        net.sigma, net.loc_contrast = saved


def test_text_centring_by_hand():
    # units (1,1) and (5,1): mean (3,1), centred (-2,0) and (2,0), RMS norm 2
    net = create_method("afloc", TINY).build(2)
    net.set_text_stats(torch.tensor([[1.0, 1.0], [5.0, 1.0]]))
    assert torch.equal(net.text_mean, torch.tensor([3.0, 1.0])) and net.text_scale.item() == 2.0
    raw = torch.tensor([[7.0, 3.0]])
    with torch.no_grad():
        assert torch.allclose(net.project_text(raw), net.text_proj(torch.tensor([[2.0, 1.0]])))


def test_label_built_reports_when_dataset_has_none(tmp_path):
    method = create_method("afloc", {**TINY, "w_word": 0.0, "w_sentence": 0.0})
    train = ToyReports(16, 0, with_reports=False)
    method.fit(train, ToyReports(8, 1, with_reports=False), FitContext(checkpoint_dir=tmp_path, seed=0))
    assert method.metadata["reports_source"] == "labels"
    assert "built from the image labels" in method.metadata["note"]
    with pytest.raises(ValueError, match="no .reports"):
        create_method("afloc", {**TINY, "reports": "dataset"}).fit(train, None, FitContext(checkpoint_dir=tmp_path))


def test_bad_configs_and_states_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown afloc config"):
        create_method("afloc", {"tempp": 1})
    with pytest.raises(ValueError, match="text_mode"):
        create_method("afloc", {"text_mode": "half"})
    with pytest.raises(RuntimeError, match="not trained"):
        create_method("afloc", TINY).predict(torch.zeros(1, 1, 64, 64))
    with pytest.raises(FileNotFoundError, match="not an AFLoc checkpoint"):
        create_method("afloc", {}).load(tmp_path)
    with pytest.raises(FileNotFoundError, match="Hugging Face"):
        create_method("afloc", {**TINY, "text_model_path": str(tmp_path)}).text_encoder()
    with pytest.raises(ValueError, match="loc_level"):
        create_method("afloc", {**TINY, "loc_level": "word"}).build(384)
    net = create_method("afloc", {**TINY, "loc_level": "report", "loc_contrast": "softmax"}).build(384)
    with pytest.raises(ValueError, match="loc_contrast"):
        net.maps(torch.zeros(1, 1, 64, 64), [0])
    with pytest.raises(ValueError, match="text_center"):
        create_method("afloc", {**TINY, "text_mode": "finetune"}).fit(
            ToyReports(4, 0), None, FitContext(checkpoint_dir=tmp_path / "f"))
    with pytest.raises(FileNotFoundError, match="image_weights"):
        create_method("afloc", {**TINY, "image_weights": str(tmp_path / "r.pth")}).build(384)
    for bad in (0.0, 1.5, "half", True):
        with pytest.raises(ValueError, match="text_keep"):
            create_method("afloc", {**TINY, "text_keep": bad})
    with pytest.raises(ValueError, match="text_context='sentence'"):
        create_method("afloc", {**TINY, "text_keep": 0.5, "text_context": "report"})


def test_sentence_recombination_trains_on_sentence_subsets(tmp_path):
    """text_keep < 1: training batches see random sentence subsets of their reports (frozen sentence
    table, and the fine-tuned path that re-reads recombined text); validation keeps whole reports."""
    from baselines.afloc import TextBank

    class Enc:  # records what a fine-tuned encoder is asked to read
        def __init__(self):
            self.seen = []

        def __call__(self, texts):
            self.seen.extend(texts)
            raise StopIteration

    reports = ["A one. B two. C three.", "D four."]
    bank = TextBank(reports, None, frozen=False, seed=0)
    enc, subsets = Enc(), set()
    for _ in range(40):
        with pytest.raises(StopIteration):
            bank.batch(torch.tensor([0, 1]), enc, "cpu", keep=0.5)
    for text in enc.seen[0::2]:
        sents = text.split(". ")
        assert 1 <= len(sents) <= 3 and set(s.rstrip(".") + "." for s in sents) <= {"A one.", "B two.", "C three."}
        subsets.add(frozenset(sents))
    assert len(subsets) > 3 and set(enc.seen[1::2]) == {"D four."}
    method = create_method("afloc", {**TINY, "text_context": "sentence", "text_keep": 0.5})
    method.fit(ToyReports(16, 0), ToyReports(8, 1), FitContext(checkpoint_dir=tmp_path, seed=0))
    assert method.config["text_keep"] == 0.5 and method.predict(ToyReports(4, 2).images).shape == (4, 14)


def test_cosine_schedule_warms_up_and_decays_to_zero(tmp_path):
    """lr_schedule=cosine steps the rate per batch: warm-up to lr, then cosine to ~0 by the last step."""
    cfg = {**TINY, "lr_schedule": "cosine", "warmup_frac": 0.25, "max_epochs": 2}
    create_method("afloc", cfg).fit(ToyReports(32, 0), ToyReports(8, 1), FitContext(checkpoint_dir=tmp_path, seed=0))
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    sched = state["lr_schedulers"][0]
    assert sched["base_lrs"] == [TINY["lr"]] and sched["last_epoch"] == 8  # 2 epochs x 4 batches of 8
    assert sched["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        create_method("afloc", {**TINY, "lr_schedule": "linear"})


@pytest.mark.slow
def test_paper_preset_shapes_and_one_step():
    """Paper preset: ResNet-50 levels at 299 px, 768-d, fine-tuned text; one optimisation step on CPU."""
    from baselines.afloc import build_afloc_module, TextBank

    method = create_method("afloc", {"batch_size": 2}, preset="paper")
    assert method.config["backbone"] == "resnet50" and method.config["text_mode"] == "finetune"
    encoder = method.text_encoder()
    net = method.build(encoder.dim)
    refresh_prompts(net, encoder, method.config)
    data = ToyReports(2, 0, size=224)
    bank = TextBank(data.reports, encoder, frozen=False)
    module = build_afloc_module(net, encoder, bank, None, method.config)
    batch = {"image": data.images, "labels": torch.from_numpy(data.labels), "index": torch.arange(2)}
    out = module(batch["image"])
    assert out["word_regions"].shape == (2, 768, 38, 38)  # layer2 at 299 px, as in the official code
    assert out["sentence_regions"].shape == (2, 768, 19, 19)
    assert out["global"].shape == (2, 768) and out["logits"].shape == (2, 14)
    opt = module.configure_optimizers()["optimizer"]
    assert any(p is q for g in opt.param_groups for q in g["params"] for p in encoder.model.parameters())
    before = net.image.global_proj.weight.detach().clone()
    module.train()
    loss, logs = module.compute_loss(batch, module(batch["image"]))
    assert set(logs) == {"report", "sentence", "word"} and torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, net.image.global_proj.weight)


@pytest.mark.slow
def test_learns_zero_shot_classification_and_localization(tmp_path):
    """On the toy cohort, zero-shot AUROC beats chance and the map peaks in the right tile."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    # the default (official-level) path: sentence-level maps, raw text features
    cfg = {**TINY, "backbone_channels": [16, 16, 32, 32], "embed_dim": 32, "max_epochs": 6, "batch_size": 16,
           "text_center": False}
    method = create_method("afloc", cfg)
    method.fit(ToyReports(192, 0), ToyReports(48, 1), FitContext(checkpoint_dir=tmp_path, seed=0))
    test = ToyReports(96, 2)
    probs = method.predict(test.images).numpy()
    aucs = [roc_auc_score(test.labels[:, c], probs[:, c]) for c in BOX_CLASSES if 0 < test.labels[:, c].sum() < 96]
    assert np.mean(aucs) > 0.6
    maps = method.explain(test.images, BOX_CLASSES)  # [N, 8, 4, 4]; tile j covers row j//4, column j%4 (2x1 cells)
    hits = total = 0
    for j, c in enumerate(BOX_CLASSES):
        pos = np.flatnonzero(test.labels[:, c])
        if len(pos):
            peak = maps[pos, j].flatten(1).argmax(1)
            rows, cols = peak // 4, peak % 4
            hits += int(((rows // 2 == j // 4) & (cols == j % 4)).sum())
            total += len(pos)
    assert hits / total > 1 / 8 + 0.1  # chance is one tile in eight
