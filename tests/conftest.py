"""Shared test setup: one CPU thread per test process (several helpers share 2 cores), tiny datasets."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


class TinyLabelled(torch.utils.data.Dataset):
    """A learnable toy split: finding c is present iff a bright patch sits in tile c of a 4x4 grid."""

    def __init__(self, n: int, seed: int, size: int = 16):
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(n, 14, generator=g) < 0.3).float()
        self.images = torch.rand(n, 1, size, size, generator=g) * 0.2
        t = size // 4
        for c in range(14):
            r, col = divmod(c, 4)
            self.images[:, 0, r * t : (r + 1) * t, col * t : (col + 1) * t] += 0.8 * self.labels[:, c, None, None]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "labels": self.labels[i], "index": i}


@pytest.fixture
def tiny_splits():
    return TinyLabelled(96, 0), TinyLabelled(48, 1)
