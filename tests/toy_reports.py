"""A toy cohort with reports, shared by the AFLoc and CAN method tests (imported as a plain module: tests/ is
on sys.path under pytest's default import mode)."""

from __future__ import annotations

import numpy as np
import torch

from baselines.afloc import FINDING_PHRASES
from wsl_bench.labels import BOX_FINDINGS, FINDINGS, finding_index

BOX_CLASSES = [finding_index(b) for b in BOX_FINDINGS]
TILE_NAMES = ["upper left", "upper mid left", "upper mid right", "upper right",
              "lower left", "lower mid left", "lower mid right", "lower right"]


class ToyReports(torch.utils.data.Dataset):
    """Box finding k is a bright tile k of a 2x4 grid; each image's report names its findings and tiles."""

    def __init__(self, n: int, seed: int, size: int = 64, with_reports: bool = True):
        g = np.random.default_rng(seed)
        self.labels = np.zeros((n, 14), dtype=np.float32)
        for i in range(n):
            k = g.choice(8, size=g.integers(0, 3), replace=False)
            self.labels[i, [BOX_CLASSES[j] for j in k]] = 1
        self.images = torch.from_numpy(g.random((n, 1, size, size)).astype(np.float32) * 0.2)
        th, tw = size // 2, size // 4
        for j, c in enumerate(BOX_CLASSES):
            r, col = divmod(j, 4)
            self.images[:, 0, r * th:(r + 1) * th, col * tw:(col + 1) * tw] += 0.8 * torch.from_numpy(
                self.labels[:, c])[:, None, None]
        if with_reports:
            self.reports = []
            for row in self.labels:
                sents = [f"There is {FINDING_PHRASES[FINDINGS[c]]} in the {TILE_NAMES[j]} zone."
                         for j, c in enumerate(BOX_CLASSES) if row[c]]
                self.reports.append(" ".join(sents) or "No acute cardiopulmonary abnormality.")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "labels": torch.from_numpy(self.labels[i]), "index": i}
