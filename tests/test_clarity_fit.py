"""CLARiTy's stages end to end on a toy cohort: DINO, teacher, training through the harness,
stage caching across variants, priors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clarity.config import ClarityConfig
from clarity.dino import DinoModule, dino_loss, random_crops
from clarity.priors import UserMasks, fill_rows, make_prior
from wsl_bench.methods import FitContext, create_method

TINY_FIT = {
    "arch": "t16-64-d3", "segcam_hidden": 16, "epochs": 1, "batch_size": 16,
    "teacher": "convnextv2_atto", "teacher_epochs": 1, "teacher_batch_size": 16,
    "dino_epochs": 1, "dino_batch_size": 16, "dino_local_crops": 2, "dino_local_size": 32, "dino_out_dim": 64,
}


class ToyLungs(torch.utils.data.Dataset):
    """64-px toy split with a lung mask per item; finding c shows as a bright square in lung cell c."""

    def __init__(self, n: int, seed: int, size: int = 64):
        g = torch.Generator().manual_seed(seed)
        self.image_size = size
        self.image_ids = [f"toy{seed}_{i}" for i in range(n)]
        self.labels = (torch.rand(n, 14, generator=g) < 0.25).float().numpy()
        lung = torch.zeros(1, size, size)
        lung[:, 8:56, 4:28] = 1
        lung[:, 8:56, 36:60] = 1
        self.lung = lung
        self.images = torch.rand(n, 1, size, size, generator=g) * 0.2 + 0.3 * lung
        for c in range(14):
            r, col = divmod(c, 4)
            y, x = 8 + r * 12, 4 + col * 14
            self.images[:, 0, y:y + 6, x:x + 6] += 0.5 * torch.from_numpy(self.labels[:, c])[:, None, None]
        self.images = self.images.clamp(0, 1)

    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, i):
        return {"image": self.images[i], "labels": torch.from_numpy(self.labels[i]), "index": i, "lung_mask": self.lung}


def test_random_crops_and_dino_loss_known_value():
    x = torch.rand(4, 1, 64, 64)
    crops = random_crops(x, 32, (0.05, 0.4), torch.Generator().manual_seed(0))
    assert crops.shape == (4, 1, 32, 32) and crops.min() >= 0 and crops.max() <= 1
    again = random_crops(x, 32, (0.05, 0.4), torch.Generator().manual_seed(0))
    torch.testing.assert_close(crops, again)  # reproducible from the generator
    k = 8
    flat = [torch.zeros(2, k)] * 3
    # uniform teacher and student: cross-entropy log K
    assert dino_loss(flat, flat[:2], torch.zeros(k), 0.1, 0.04).item() == pytest.approx(math.log(k))
    # a student that copies a sharp teacher pays less than a uniform one
    t = [torch.eye(k)[:2] * 5] * 2
    assert dino_loss([t[0] * 0.5] * 3, t, torch.zeros(k), 0.1, 0.04) < dino_loss(flat, t, torch.zeros(k), 0.1, 0.04)


def test_dino_step_trains_student_and_ema_moves_teacher():
    cfg = ClarityConfig.from_dict(TINY_FIT)
    module = DinoModule(cfg, total_steps=10)
    before = [p.clone() for p in module.teacher.parameters()]
    opt = module.configure_optimizers()["optimizer"]
    loss = module.loss(torch.rand(4, 1, 64, 64), torch.Generator().manual_seed(0), update_center=True)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    opt.step()
    assert module.center.abs().sum() > 0
    module.on_train_batch_end(None, None, 0)
    moved = sum(not torch.equal(a, b) for a, b in zip(before, module.teacher.parameters()))
    assert moved > 0
    assert all(not p.requires_grad for p in module.teacher.parameters())


def test_fit_runs_all_stages_caches_them_and_reloads(tmp_path):
    train, val = ToyLungs(32, 0), ToyLungs(16, 1)
    run = tmp_path / "run"
    ctx = FitContext(checkpoint_dir=run / "checkpoints" / "clarity", run_dir=run, seed=0)
    method = create_method("clarity", config=TINY_FIT)
    method.fit(train, val, ctx)
    stages = sorted(p.name.split("-")[0] for p in (run / "checkpoints").iterdir() if (p / "done.json").exists())
    assert stages == ["dino", "teacher"]
    done = {p: p.stat().st_mtime_ns for p in (run / "checkpoints").glob("*/done.json")}
    assert (run / "checkpoints" / "clarity" / "model.safetensors").exists()
    assert len(list((run / "checkpoints").glob("teacher-*/train_logits.safetensors"))) == 1
    x = val.images[:4]
    maps = method.explain(x, [0, 5])
    assert maps.shape == (4, 2, 4, 4) and torch.isfinite(maps).all()
    # an ablation variant reuses the cached teacher and DINO stages
    variant = create_method("clarity", config={**TINY_FIT, "orth_weight": 0.0})
    variant.fit(train, val, FitContext(checkpoint_dir=run / "checkpoints" / "clarity-no-orth", run_dir=run, seed=0))
    assert {p: p.stat().st_mtime_ns for p in (run / "checkpoints").glob("*/done.json")} == done
    assert variant.fit_info["teacher_s"] < method.fit_info["teacher_s"]
    reloaded = create_method("clarity", config=TINY_FIT)
    reloaded.load(run / "checkpoints" / "clarity")
    torch.testing.assert_close(reloaded.explain(x, [0, 5]), maps)


def test_priors_synth_user_and_errors(tmp_path):
    train = ToyLungs(4, 0)
    batch = {"image": train.images[:2], "index": torch.tensor([0, 3]), "lung_mask": train.lung.expand(2, 1, 64, 64)}
    auto = make_prior("auto", train, train)
    torch.testing.assert_close(auto(batch, True), train.lung.expand(2, 1, 64, 64))
    synth = make_prior("synth", train, train)
    with pytest.raises(KeyError, match="lung_mask"):
        synth({"image": batch["image"], "index": batch["index"]}, True)
    assert make_prior("none", train, train) is None
    # user masks: one atlas, a table by image id, a folder of PNGs
    np.save(tmp_path / "atlas.npy", np.ones((32, 32), dtype=np.float32))
    atlas = make_prior("user", train, train, prior_path=str(tmp_path / "atlas.npy"))
    assert atlas(batch, True).shape == (2, 1, 64, 64) and atlas(batch, True).min() == 1
    np.savez(tmp_path / "table.npz", toy0_0=np.zeros((8, 8)), toy0_3=np.ones((8, 8)))
    table = make_prior("user", train, train, prior_path=str(tmp_path / "table.npz"))
    out = table(batch, True)
    assert out[0].max() == 0 and out[1].min() == 1
    from PIL import Image

    folder = tmp_path / "masks"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(folder / "toy0_0.png")
    with pytest.raises(FileNotFoundError, match="toy0_3"):
        make_prior("user", train, train, prior_path=str(folder))(batch, True)
    assert UserMasks(folder)(["toy0_0"], (8, 8)).min() == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UserMasks(tmp_path / "nope")


def test_thorax_region_fills_each_row_between_the_lung_fields():
    lungs = torch.zeros(1, 1, 3, 8)
    lungs[0, 0, 0, [1, 2, 5, 6]] = 1  # two lung fields in row 0
    lungs[0, 0, 1, 3] = 1  # one pixel: nothing to fill
    filled = fill_rows(lungs)
    assert filled[0, 0, 0].tolist() == [0, 1, 1, 1, 1, 1, 1, 0]
    assert filled[0, 0, 1].tolist() == lungs[0, 0, 1].tolist() and filled[0, 0, 2].sum() == 0
    soft = torch.tensor([[[[0.2, 0.9, 0.1, 0.6, 0.3]]]])  # an atlas row: min of the running maxima
    torch.testing.assert_close(fill_rows(soft), torch.tensor([[[[0.2, 0.9, 0.6, 0.6, 0.3]]]]))
    train = ToyLungs(2, 0)
    batch = {"image": torch.zeros(1, 1, 3, 8), "index": torch.tensor([0]), "lung_mask": lungs}
    torch.testing.assert_close(make_prior("synth", train, train, region="thorax")(batch, True), filled)
    torch.testing.assert_close(make_prior("synth", train, train)(batch, True), lungs)
    assert make_prior("none", train, train, region="thorax") is None
    with pytest.raises(ValueError, match="prior_region"):
        make_prior("synth", train, train, region="heart")


@pytest.mark.slow  # decodes the 517 real lung masks of the torchxrayvision wheel (~15 s on 2 cores)
def test_lung_atlas_prior_for_data_without_masks():
    train = ToyLungs(2, 0)
    prior = make_prior("auto", train, train)
    out = prior({"image": torch.rand(2, 1, 32, 32), "index": torch.tensor([0, 1])}, True)
    assert out.shape == (2, 1, 32, 32)
    centre, corner = out[0, 0, 16, 8].item(), out[0, 0, 0, 0].item()  # a lung field vs the image corner
    assert centre > 0.5 > corner


def test_dice_known_values_and_segmenter_trains_on_masks(tmp_path):
    from clarity.segmenter import LungSegmenter, dice, train_segmenter

    t = torch.zeros(1, 1, 2, 2)
    t[0, 0, 0] = 1
    assert dice(t, t).item() == pytest.approx(1.0)
    assert dice(torch.full_like(t, 0.5), t).item() == pytest.approx(2 * 1.0 / (2.0 + 2.0))
    train, val = ToyLungs(32, 0), ToyLungs(16, 1)
    ctx = FitContext(checkpoint_dir=tmp_path / "x", run_dir=tmp_path, seed=0)
    seg = train_segmenter(train, val, ctx, epochs=2, batch_size=16)
    prob = seg.predict(val.images[:4])
    assert prob.shape == (4, 1, 64, 64)
    target = val.lung.expand(4, 1, 64, 64)
    assert dice(prob, target) > dice(LungSegmenter().predict(val.images[:4]), target)
    prior = make_prior("segmenter", train, val, segmenter=seg)
    torch.testing.assert_close(prior({"image": val.images[:4]}, True), prob)
    again = train_segmenter(train, val, ctx, epochs=2, batch_size=16)  # cached in the run folder
    torch.testing.assert_close(again.predict(val.images[:4]), prob)
    with pytest.raises(ValueError, match="lung_mask"):
        train_segmenter(torch.utils.data.TensorDataset(torch.zeros(2)), val, ctx)


def test_stage_epochs_are_capped_by_the_run_budget(tmp_path):
    from clarity.stages import stage_dir, stage_epochs

    assert stage_epochs(3, FitContext(checkpoint_dir=tmp_path)) == 3
    assert stage_epochs(3, FitContext(checkpoint_dir=tmp_path, max_epochs=1)) == 1
    # stages are shared through the run folder; without one they sit beside the method's folder
    ctx = FitContext(checkpoint_dir=tmp_path / "run" / "checkpoints" / "clarity", run_dir=tmp_path / "run")
    a, b = stage_dir(ctx, "teacher-x", {"k": 1}), stage_dir(ctx, "teacher-x", {"k": 2})
    assert a.parent == tmp_path / "run" / "checkpoints" and a != b
    assert stage_dir(FitContext(checkpoint_dir=tmp_path / "m"), "dino", {}).parent == tmp_path


def test_teacher_table_equals_teacher_forward_and_replaces_it_in_training():
    from clarity.model import ClarityNet
    from clarity.teacher import Teacher, teacher_table
    from clarity.training import ClarityModule

    torch.manual_seed(0)
    train = ToyLungs(20, 0)
    teacher = Teacher("convnextv2_atto", 64).eval()
    table = teacher_table(teacher, train, batch_size=8)  # 3 batches, the last one short
    assert table.shape == (20, 14)
    with torch.no_grad():
        direct = teacher(train.images[[3, 17, 9]])
    torch.testing.assert_close(table[[3, 17, 9]], direct, atol=1e-5, rtol=1e-4)
    cfg = ClarityConfig.from_dict(TINY_FIT)
    module = ClarityModule(ClarityNet(cfg), cfg, teacher=teacher, teacher_table=table)
    idx = torch.tensor([17, 3])
    assert torch.equal(module.teacher_logits(train.images[idx], idx), table[idx])  # a lookup, no forward
    torch.testing.assert_close(module.teacher_logits(train.images[idx]), table[idx], atol=1e-5, rtol=1e-4)
    off = ClarityConfig.from_dict({**TINY_FIT, "distill": "none"})
    assert ClarityModule(ClarityNet(off), off, teacher_table=table).teacher_logits(train.images[idx], idx) is None
