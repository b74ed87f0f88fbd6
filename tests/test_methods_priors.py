"""The sanity references: centred Gaussian, average lung field, seeded noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.priors import _split_lung_masks, centred_gaussian, lung_atlas
from wsl_bench.labels import BOX_FINDING_INDICES
from wsl_bench.methods import FitContext, create_method


class MaskSplit(torch.utils.data.Dataset):
    def __init__(self, masks, labels):
        self.masks, self.labels = masks, labels

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return {"image": torch.zeros(1, 8, 8), "labels": torch.from_numpy(self.labels[i]), "lung_mask": self.masks[i][None]}


def test_centred_gaussian_known_shape():
    g = centred_gaussian(64, 0.25)
    assert g.max() == 1.0 and g.shape == (64, 64)
    assert np.allclose(g, g[::-1]) and np.allclose(g, g.T)  # symmetric about the centre
    assert g[32, 32] > g[32, 48] > g[32, 63]
    # at one sigma (16 px) from the centre the value is exp(-1/2)
    assert g[31, 31 + 16] == pytest.approx(np.exp(-0.5) * g[31, 31], rel=0.05)


def test_prior_center_explains_every_class_the_same(tmp_path):
    m = create_method("prior-center")
    maps = m.explain(torch.rand(3, 1, 32, 32), BOX_FINDING_INDICES)
    assert maps.shape == (3, 8, 64, 64)
    assert torch.equal(maps[0, 0], maps[2, 7])
    assert torch.unravel_index(maps[0, 0].argmax(), (64, 64)) in [(31, 31), (31, 32), (32, 31), (32, 32)]


def test_lung_atlas_is_a_lung_field():
    a = lung_atlas(64)
    assert a.shape == (64, 64) and 0.0 <= a.min() and a.max() <= 1.0
    mid_row = a[28:36]
    # two lungs, one each side of the mediastinum: lateral columns brighter than the midline
    assert mid_row[:, 16].mean() > mid_row[:, 32].mean() + 0.2
    assert mid_row[:, 48].mean() > mid_row[:, 32].mean() + 0.2
    assert abs(a[:, :32].sum() - a[:, 32:].sum()) / a.sum() < 0.15  # roughly left/right symmetric
    assert a[:4].mean() < 0.1  # above the apices


def test_prior_lung_uses_the_training_lung_masks(tmp_path):
    masks = torch.zeros(2, 16, 16)
    masks[0, :, :8] = 1.0
    masks[1, :8, :] = 1.0
    labels = np.zeros((2, 14), np.float32)
    labels[0, 2] = 1
    split = MaskSplit(masks, labels)
    split.labels = labels
    expected = (masks[0] + masks[1]).numpy() / 2
    assert np.allclose(_split_lung_masks(split, 16), expected)
    m = create_method("prior-lung", {"map_size": 16})
    m.fit(split, split, FitContext(checkpoint_dir=tmp_path, seed=3))
    assert np.allclose(m.explain(torch.zeros(1, 1, 16, 16), [0])[0, 0].numpy(), expected)
    assert m.predict(torch.zeros(4, 1, 8, 8))[:, 2].tolist() == [0.5] * 4  # training prevalence
    again = create_method("prior-lung", {"map_size": 16})
    again.load(tmp_path)
    assert np.array_equal(again.prior_map, m.prior_map) and np.array_equal(again.prevalence, m.prevalence)


def test_random_is_a_function_of_image_and_seed(tmp_path):
    m = create_method("random")
    x = torch.rand(6, 1, 32, 32)
    full = m.explain(x, BOX_FINDING_INDICES)
    assert full.shape == (6, 8, 8, 8) and 0 <= full.min() and full.max() <= 1
    assert torch.equal(full[3:], m.explain(x[3:], BOX_FINDING_INDICES))  # independent of batching
    assert not torch.equal(full[0, 0], full[0, 1]) and not torch.equal(full[0, 0], full[1, 0])
    assert 0.4 < float(full.mean()) < 0.6 and 0.25 < float(full.std()) < 0.32  # uniform: std 0.289
    threads = torch.get_num_threads()
    try:  # integer hashing: the same noise whatever the thread count
        torch.set_num_threads(2)
        assert torch.equal(m.explain(x, BOX_FINDING_INDICES), full)
    finally:
        torch.set_num_threads(threads)
    other = create_method("random")
    other.fit(MaskSplit(torch.zeros(0, 4, 4), np.zeros((0, 14), np.float32)), None, FitContext(checkpoint_dir=tmp_path, seed=7))
    assert not torch.equal(other.explain(x, [0]), full[:, :1])
    reloaded = create_method("random")
    reloaded.load(tmp_path)
    assert torch.equal(reloaded.explain(x, [0]), other.explain(x, [0]))
    assert m.predict(x).shape == (6, 14)


def test_bad_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "prior.json").write_text("{not json")
    with pytest.raises(ValueError, match="prior.json"):
        create_method("prior-center").load(tmp_path)
