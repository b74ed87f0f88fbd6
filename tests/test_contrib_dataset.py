"""The contributor guide's dataset example ("Adding a dataset: one file, one registration"), executed.

`EXAMPLE` is the guide's code block, verbatim: written to a module, imported (the import registers it), a tiny
folder in its layout is written, and the dataset is resolved, loaded, listed and described like a built-in.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wsl_bench.cli import app
from wsl_bench.data import registry
from wsl_bench.labels import FINDINGS

EXAMPLE = '''\
"""my_nodules: PNG chest X-rays in images/, their nodule labels and boxes in nodules.csv."""

from pathlib import Path

import numpy as np
import pandas as pd

from wsl_bench.data.registry import Dataset, DatasetError, register_dataset
from wsl_bench.data.schema import BOX_COLUMNS, CXRDataset, Cohort
from wsl_bench.images import read_grey, read_header
from wsl_bench.labels import FINDINGS


class PNGSplit(CXRDataset):
    """One split; pixels are read from disk when asked for."""

    def __init__(self, root: Path, rows: pd.DataFrame, image_size: int, split: str):
        labels = np.zeros((len(rows), len(FINDINGS)), np.float32)
        labels[:, FINDINGS.index("Nodule")] = rows["nodule"].to_numpy()
        self.paths = [root / "images" / i for i in rows["image"]]
        boxes = rows[rows["nodule"] == 1].rename(columns={"image": "image_id"}).assign(label="Nodule")
        super().__init__(list(rows["image"]), list(rows["patient"]), labels,
                         [read_header(p) for p in self.paths], image_size, boxes[list(BOX_COLUMNS)],
                         meta={"split": split, "dataset": "my-nodules"})

    def _load_image(self, i: int) -> np.ndarray:
        return read_grey(self.paths[i], self.image_size).astype(np.float32) / 255.0


@register_dataset
class MyNodules(Dataset):
    name = "my-nodules"
    description = "Nodules boxed by our readers on PNG chest X-rays"
    source = "the imaging team's export (ask them for access)"
    root_hint = "a folder with images/*.png and nodules.csv"
    labels = ("nodule",)  # its own vocabulary ...
    localizes = ("nodule",)
    to_suite = {"nodule": ("Nodule",)}  # ... mapped onto the suite's findings
    config_keys = frozenset({"name", "root", "image_size"})

    def table(self, root) -> pd.DataFrame:
        path = Path(root) / "nodules.csv"  # image,patient,split,nodule,x,y,w,h (original pixels)
        if not path.is_file():
            raise DatasetError(f"{path} is missing; --root must be {self.root_hint}")
        return pd.read_csv(path, dtype={"image": str, "patient": str})

    def load(self, data_cfg, seed, progress=False):
        root, table = Path(data_cfg["root"]), self.table(data_cfg["root"])
        splits = [PNGSplit(root, table[table["split"] == s], int(data_cfg["image_size"]), s)
                  for s in ("train", "val", "test")]
        return Cohort(self.name, *splits, fingerprint=f"my-nodules-{len(table)}", info={"dataset": self.name})

    def info(self, root=None, seed=0):
        if root is None:
            raise DatasetError(f"--data {self.name} needs --root DIR ({self.root_hint})")
        table = self.table(root)
        return {"images": len(table), "boxes": int(table["nodule"].sum()),
                "split": {str(k): int(v) for k, v in table["split"].value_counts().items()}}
'''

runner = CliRunner()


@pytest.fixture
def my_nodules(tmp_path, monkeypatch):
    """The example as an importable module, registered for one test and unregistered afterwards."""
    (tmp_path / "my_nodules.py").write_text(EXAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_nodules", None)
    module = importlib.import_module("my_nodules")
    yield module
    registry.unregister_dataset("my-nodules")
    sys.modules.pop("my_nodules", None)


@pytest.fixture
def folder(tmp_path):
    """Twelve 40x48 PNGs in three splits; the odd-numbered ones hold a bright nodule and its box."""
    root = tmp_path / "nodules-data"
    (root / "images").mkdir(parents=True)
    lines = ["image,patient,split,nodule,x,y,w,h"]
    for k in range(12):
        img = np.full((40, 48), 30, np.uint8)
        split = ("train", "train", "train", "train", "train", "train", "val", "val", "test", "test", "test", "test")[k]
        if k % 2:
            img[10:20, 12:24] = 220
            lines.append(f"im{k:02d}.png,p{k // 2},{split},1,12,10,12,10")
        else:
            lines.append(f"im{k:02d}.png,p{k // 2},{split},0,,,,")
        Image.fromarray(img).save(root / "images" / f"im{k:02d}.png")
    (root / "nodules.csv").write_text("\n".join(lines) + "\n")
    return root


def test_the_example_registers_loads_and_lists(my_nodules, folder):
    ds = registry.get_dataset("my-nodules")
    assert ds.suite_box_findings() == ("Nodule",)
    cfg = ds.resolve_config({"name": "my-nodules", "root": str(folder), "image_size": 16})
    cohort = ds.load(cfg, seed=0)
    assert (len(cohort.train), len(cohort.val), len(cohort.test)) == (6, 2, 4)
    test = cohort.test
    assert test.image_ids == ["im08.png", "im09.png", "im10.png", "im11.png"]
    assert test.orig_sizes.tolist()[0] == [40, 48]  # (height, width) of the original
    assert test.boxes[["image_id", "label", "x", "y", "w", "h"]].values.tolist() == [
        ["im09.png", "Nodule", 12.0, 10.0, 12.0, 10.0], ["im11.png", "Nodule", 12.0, 10.0, 12.0, 10.0]]
    nodule = FINDINGS.index("Nodule")
    assert test.labels[:, nodule].tolist() == [0, 1, 0, 1] and test.labels.sum() == 2
    item = test[1]
    assert item["image"].shape == (1, 16, 16) and float(item["image"].max()) > 0.8
    assert test.load_images([0, 1]).shape == (2, 1, 16, 16)

    res = runner.invoke(app, ["datasets", "list"])
    assert res.exit_code == 0 and "my-nodules" in res.output and "Nodules boxed by our readers" in res.output
    res = runner.invoke(app, ["datasets", "info", "--data", "my-nodules", "--root", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"images": 12, "boxes": 6, "split": {"train": 6, "test": 4, "val": 2}}


def test_the_example_errors_are_clear(my_nodules, tmp_path):
    ds = registry.get_dataset("my-nodules")
    with pytest.raises(registry.DatasetError, match="--data my-nodules needs --root DIR"):
        ds.resolve_config({"name": "my-nodules", "image_size": 16})
    with pytest.raises(registry.DatasetError, match=r"unknown my-nodules data setting\(s\) \['zoom'\]"):
        ds.resolve_config({"name": "my-nodules", "root": str(tmp_path), "image_size": 16, "zoom": 2})
    res = runner.invoke(app, ["datasets", "info", "--data", "my-nodules", "--root", str(tmp_path)])
    assert res.exit_code == 2 and "nodules.csv is missing" in res.output
    res = runner.invoke(app, ["synth", "export", "--mirror", "my-nodules", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "'my-nodules' has no mirror export" in res.output


def test_unregistering_leaves_the_built_ins(my_nodules):
    registry.unregister_dataset("my-nodules")
    assert "my-nodules" not in registry.available_datasets()
    assert {"synth", "nih"} <= set(registry.available_datasets())
