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


PLUGIN_SRC = os.path.join(os.path.dirname(__file__), "plugin_pkg")


@pytest.fixture(scope="session")
def demo_method() -> str:
    """Register the test plug-in's `tiny-cam` in this process (import from source); returns its name."""
    import sys

    src = os.path.join(PLUGIN_SRC, "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    import wsl_bench_plugin_demo  # noqa: F401  (registers tiny-cam)

    return "tiny-cam"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    """pip-install the plug-in package (a real build, entry point included) into a private folder.

    Returns an env dict whose PYTHONPATH makes that install visible to subprocesses; the test env
    itself is left untouched. The source is copied first so the build leaves nothing in the tree.
    """
    import shutil
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN_SRC, base / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(base / "src")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = str(target) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("WSL_DEMO_KILL_AT_STEP", None)
    env.pop("WSL_DEMO_KILL_AT_EXPLAIN", None)
    return env
