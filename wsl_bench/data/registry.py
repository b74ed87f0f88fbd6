"""The dataset protocol and the registry every dataset registers itself in.

A dataset is a class that owns its label space (the findings it labels, the findings it localizes,
and how each of its findings maps onto the suite's ChestX-ray14 vocabulary), its folder-layout
check, its loader and its mirror export. It registers itself with `@register_dataset`; the run,
the CLI and the report look datasets up here and never name one. The built-in datasets live in
`BUILTIN_MODULES`; an outside package adds its own through the entry-point group
``wsl_bench.datasets`` (loading an entry point imports its module, and the import registers).
"""

from __future__ import annotations

import abc
import importlib
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from wsl_bench.labels import BOX_FINDINGS, FINDINGS
from wsl_bench.plugins import load_group

ENTRY_POINT_GROUP = "wsl_bench.datasets"

# Modules that register the built-in datasets; importing one registers its class.
BUILTIN_MODULES: tuple[str, ...] = (
    "wsl_bench.data.synth.registered",
    "wsl_bench.data.nih_registered",
    "wsl_bench.data.rsna",
    "wsl_bench.data.siim",
    "wsl_bench.data.vindr",
)
# Built-ins that may be absent from a checkout; any other import failure is raised.
OPTIONAL_BUILTINS: frozenset[str] = frozenset({"wsl_bench.data.rsna", "wsl_bench.data.siim", "wsl_bench.data.vindr"})


class DatasetError(ValueError):
    """A user mistake about a dataset: a bad setting, a missing file, a malformed row."""


class Dataset(abc.ABC):
    """A chest X-ray localization dataset.

    Label space: `labels` and `localizes` are in the dataset's own vocabulary; `to_suite` maps each
    of its findings onto the suite's findings (`wsl_bench.labels.FINDINGS` for image labels and
    `BOX_FINDINGS` for boxes). A finding missing from `to_suite` is not used, and the report says so.
    Cohorts a dataset loads are already in the suite's vocabulary.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""  # where to get it (a URL or the wheel that ships it)
    root_hint: ClassVar[str] = ""  # what the --root folder holds, for the missing-root error
    labels: ClassVar[tuple[str, ...]] = ()  # image-level findings, own vocabulary
    localizes: ClassVar[tuple[str, ...]] = ()  # findings with boxes or masks, own vocabulary
    to_suite: ClassVar[dict[str, tuple[str, ...]]] = {}  # own finding -> suite findings
    needs_root: ClassVar[bool] = True  # False: generated locally (SynthCXR)
    has_masks: ClassVar[bool] = False  # pixel masks for the mask metrics (PxAP, mIoU, Dice)
    exact_masks: ClassVar[bool] = False  # lesion masks exact enough for the supervised ceiling
    readers: ClassVar[bool] = False  # several readers per image (scored per reader and fused)
    config_keys: ClassVar[frozenset[str]] = frozenset({"name", "image_size"})
    defaults: ClassVar[dict[str, Any]] = {}

    def check_keys(self, data_cfg: dict[str, Any]) -> None:
        """Raise DatasetError naming every `data` key this dataset does not know (`root` is always allowed)."""
        known = set(self.config_keys) | {"root"}
        unknown = sorted(set(data_cfg) - known)
        if unknown:
            raise DatasetError(
                f"unknown {self.name} data setting(s) {unknown}; known: {', '.join(sorted(known))}"
            )

    def resolve_config(self, data_cfg: dict[str, Any]) -> dict[str, Any]:
        """The full `data` section of a run config: defaults filled in, unknown keys an error."""
        cfg = {**self.defaults, **data_cfg, "name": self.name}
        if self.needs_root and not cfg.get("root"):
            raise DatasetError(
                f"--data {self.name} needs --root DIR ({self.root_hint or self.source or 'the dataset folder'})"
            )
        self.check_keys(data_cfg)
        return cfg

    @abc.abstractmethod
    def load(self, data_cfg: dict[str, Any], seed: int, progress: bool = False):
        """The `Cohort` (train/val/test splits) a resolved `data` config names."""

    @abc.abstractmethod
    def info(self, root: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
        """What `wsl-bench datasets info` prints: counts, splits, boxes per label, missing files."""

    def export_mirror(self, out: str | Path, *, size: int, seed: int = 0, progress: bool = False) -> dict[str, Any]:
        """Write this dataset's folder layout with its real annotation geometry and synthetic pixels.

        Returns a summary; `images`, `box_images` and `boxes` (counts) are what `synth export` prints."""
        others = [n for n, c in available_datasets().items() if has_mirror(c)]
        raise DatasetError(
            f"dataset {self.name!r} has no mirror export; datasets with one: {', '.join(others) or '(none)'}"
        )

    def suite_box_findings(self) -> tuple[str, ...]:
        """The suite's box findings this dataset localizes, through `to_suite`."""
        mapped = {s for f in self.localizes for s in self.to_suite.get(f, ())}
        return tuple(b for b in BOX_FINDINGS if b in mapped)


def has_mirror(cls: type[Dataset]) -> bool:
    """Whether a dataset class writes a mirror (overrides `export_mirror`)."""
    return cls.export_mirror is not Dataset.export_mirror


def mapping_rows(ds: Dataset) -> list[dict[str, str]]:
    """The mapping table of one dataset as rows (own finding, suite finding or '' if unused)."""
    rows = []
    for f in dict.fromkeys((*ds.labels, *ds.localizes)):
        targets = ds.to_suite.get(f, ())
        for t in targets or ("",):
            rows.append({"dataset": ds.name, "finding": f, "suite": t, "localized": str(f in ds.localizes)})
    return rows


def describe(ds: Dataset) -> dict[str, Any]:
    """One dataset as `wsl-bench datasets list --json` prints it."""
    return {
        "name": ds.name,
        "description": ds.description,
        "source": ds.source,
        "localizes": list(ds.suite_box_findings()),
        "labels": list(ds.labels),
        "has_masks": ds.has_masks,
        "exact_masks": ds.exact_masks,
        "readers": ds.readers,
        "needs_root": ds.needs_root,
        "mirror": has_mirror(type(ds)),
        "mapping": mapping_rows(ds),
    }


_REGISTRY: dict[str, type[Dataset]] = {}
_LOADED = False
_ENTRY_POINT_ERRORS: list[str] = []


def register_dataset(cls: type[Dataset]) -> type[Dataset]:
    """Class decorator: register a Dataset under its `name`."""
    if not (isinstance(cls, type) and issubclass(cls, Dataset)) or not cls.name:
        raise TypeError("@register_dataset decorates a wsl_bench.data.registry.Dataset subclass with a name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"dataset name {cls.name!r} is registered twice ({existing} and {cls})")
    bad = sorted({s for ts in cls.to_suite.values() for s in ts} - set(FINDINGS) - set(BOX_FINDINGS))
    if bad:
        raise ValueError(f"dataset {cls.name!r} maps onto unknown suite findings {bad}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (tests and notebooks that register a throwaway one clean up with this)."""
    _REGISTRY.pop(name, None)


def load_entry_points() -> list[str]:
    """Import every module of the `wsl_bench.datasets` entry-point group; returns the load errors (kept)."""
    errors = load_group(ENTRY_POINT_GROUP, metadata.entry_points)
    _ENTRY_POINT_ERRORS[:] = errors
    return errors


def entry_point_errors() -> list[str]:
    """The errors of the last entry-point load (`datasets list` prints them)."""
    return list(_ENTRY_POINT_ERRORS)


def _load_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True  # before the imports: a module that looks the registry up while loading must not recurse
    try:
        for mod in BUILTIN_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if mod not in OPTIONAL_BUILTINS or exc.name != mod:
                    raise
        load_entry_points()
    except BaseException:
        _LOADED = False
        raise


def available_datasets() -> dict[str, type[Dataset]]:
    """Every registered dataset class by name (built-ins and entry points loaded first), sorted."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def get_dataset(name: str) -> Dataset:
    """An instance of the registered dataset `name`; a clear error naming the registered ones."""
    datasets = available_datasets()
    if name not in datasets:
        raise DatasetError(f"unknown dataset {name!r}; registered: {', '.join(datasets)}. See `wsl-bench datasets list`.")
    return datasets[name]()
