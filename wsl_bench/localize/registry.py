"""The box-policy protocol and the registry every policy registers itself in.

A box policy turns a heatmap into candidate boxes. It is a `Policy` subclass registered with
`@register_policy`; the scorer, the report and the explain code look it up by the name written in
`summary.json` (`get_policy(summary["policy"])`) and never name one. The built-in policies live in
`BUILTIN_MODULES`; an outside package adds its own through the entry-point group
``wsl_bench.policies`` (loading an entry point imports its module, and the import registers).

Two kinds: a single-map policy applies one `BoxPolicy` (thresholds + component rule) to every map
(`single_map`); a dataset-level policy (`dataset_level = True`) chooses its thresholds from the
scored boxes themselves and scores through the evaluator's `DatasetScoring` (`score_dataset`).
Either way `from_summary` rebuilds, from `summary.json` alone, the `BoxPolicy` applied to one class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from wsl_bench.localize.components import Candidates
from wsl_bench.localize.policies import BoxPolicy
from wsl_bench.plugins import Plugins

ENTRY_POINT_GROUP = "wsl_bench.policies"

# Modules that register the built-in policies, in the order the CLI lists them.
BUILTIN_MODULES: tuple[str, ...] = (
    "wsl_bench.localize.fixed_policies",
    "wsl_bench.localize.calibrated",
    "wsl_bench.localize.maxboxacc",
)

# How `check` words an option a policy fixes itself ("fixes its own thresholds and components").
_OPTION_WORDS = {"tau": "thresholds", "components": "components"}


@dataclass(frozen=True)
class PolicyTable:
    """How the report shows what a policy chose per class: one table, one row per method.

    `name` is the file stem under tables/; `macro` adds a macro column, `bold` marks the best value
    of each column (for a score; not for a setting such as tau)."""

    name: str
    title: str
    caption: str
    macro: bool = False
    bold: bool = False


@dataclass(frozen=True)
class ChosenSetting:
    """One class's entry in a `PolicyTable`: the shown value, extra CSV columns and a note after the
    value in the displayed cell (e.g. " (largest)")."""

    label: str
    value: float
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""


class DatasetScoring(Protocol):
    """What the evaluator hands a dataset-level policy's `score_dataset`
    (`wsl_bench.metrics.evaluator.DatasetScoring` implements it).

    `boxes`: the box table (one row per ground-truth box, with patient_id, size_bin, ...);
    `groups`: key -> the boxes of one (image, label) map (`.key`, `.image_id`, `.label`, `.rows`,
    `.gt` xyxy in image pixels); `opts`: the resolved scoring options; `patients`: image id ->
    patient id or None; `seed`: the run's seed."""

    boxes: Any
    groups: dict
    opts: dict
    patients: Any
    seed: int

    def sweep(self, groups, rules) -> dict:
        """key -> (iou, iobb) arrays [len(rules), boxes, len(sweep_grid)]: best overlap of each box at
        every grid threshold (no pixel metrics; for a calibration half)."""

    def scorer(self):
        """A fresh per-box scorer (`BoxScorer`: `.cols` by box row, `.compute(boxes)` -> per-box
        table); the evaluator reads the PxAP of the last one made."""

    def run(self, scorer, groups, policies=None, sweep: bool = False, desc: str = "scoring") -> dict:
        """Score `groups` into `scorer` with `policies` (label -> BoxPolicy); with `sweep`, no
        candidates: returns key -> (iou, iobb) sweep arrays [1, boxes, K] under the "all" rule."""


class Policy:
    """A box policy: a name, the scoring options it reads, and how it makes candidate boxes.

    Subclass it, set the class attributes, implement `single_map` (or, with `dataset_level`,
    `score_dataset`) and `from_summary`, and decorate the class with `@register_policy`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Scoring options this policy reads -> default; `score(..., **options)` accepts them.
    options: ClassVar[dict[str, Any]] = {}
    # Options the policy sets itself: passing one is an error (wang2017's thresholds are fixed).
    fixed_options: ClassVar[tuple[str, ...]] = ()
    # Options written to summary["policy_options"] ("sweep_grid" as its first, last and count).
    recorded_options: ClassVar[tuple[str, ...]] = ()
    # True: thresholds are chosen from the scored boxes (score_dataset); False: one BoxPolicy for all maps.
    dataset_level: ClassVar[bool] = False
    # summary.json keys holding the settings it resolved (per-class tau and component rule).
    summary_keys: ClassVar[tuple[str, ...]] = ("policy_detail",)
    # Columns it adds to per_box.csv (the per-class tau a box was scored with, ...).
    per_box_columns: ClassVar[tuple[str, ...]] = ()
    # The report's table of its per-class choices (None: nothing to show).
    report_table: ClassVar[PolicyTable | None] = None

    def check(self, given: dict[str, Any]) -> None:
        """Refuse options this policy fixes itself (`given`: the options the caller passed, None = unset)."""
        clash = [k for k in self.fixed_options if given.get(k) is not None]
        if clash:
            what = " and ".join(dict.fromkeys(_OPTION_WORDS.get(k, k) for k in self.fixed_options))
            raise ValueError(f"policy {self.name} fixes its own {what}; drop {', '.join(clash)} "
                             f"(or use --policy threshold / calibrated)")

    def single_map(self, opts: dict[str, Any]) -> BoxPolicy:
        """The `BoxPolicy` applied to every map under the resolved options `opts`."""
        raise NotImplementedError(f"policy {self.name!r} is dataset-level: it scores through score_dataset")

    def candidates(self, norm: np.ndarray, informative: bool, opts: dict[str, Any]) -> Candidates:
        """Candidate boxes of one normalised map (`norm`: [0,1], image grid) under `opts`."""
        return self.single_map(opts).candidates(norm, informative)

    def score_dataset(self, ctx: DatasetScoring):
        """Dataset-level policies: (per-box table, summary entries) for the boxes of `ctx`."""
        raise NotImplementedError(f"policy {self.name!r} applies one BoxPolicy to every map (single_map)")

    def from_summary(self, summary: dict[str, Any], label: str) -> BoxPolicy:
        """The `BoxPolicy` this policy applied to maps of `label`, rebuilt from summary.json alone."""
        raise NotImplementedError

    def chosen(self, summary: dict[str, Any]) -> list[ChosenSetting]:
        """The rows of `report_table` for one summary.json (one per class, plus macro if any)."""
        return []

    def recorded(self, opts: dict[str, Any]) -> dict[str, Any]:
        """`recorded_options` as written to summary["policy_options"] (JSON numbers and lists)."""
        out = {}
        for k in self.recorded_options:
            if k == "sweep_grid":
                continue
            v = opts[k]
            out[k] = [float(x) for x in v] if isinstance(v, (tuple, list)) else v
        if "sweep_grid" in self.recorded_options:
            g = list(opts["sweep_grid"])
            out["sweep_grid"] = {"first": float(g[0]), "last": float(g[-1]), "n": len(g)}
        return out


def threshold_key(t: float) -> str:
    """A threshold as summary.json keys write it: 0.1 -> "0.1", 0.25 -> "0.25"."""
    return f"{float(t):g}"


def number(v) -> float:
    """A summary.json number as a float (None and non-numbers as NaN)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


_REGISTRY: dict[str, type[Policy]] = {}
_PLUGINS = Plugins(ENTRY_POINT_GROUP, BUILTIN_MODULES)


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: register a Policy subclass under its `name`."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)) or not cls.name:
        raise TypeError("@register_policy decorates a wsl_bench.localize.registry.Policy subclass with a name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"policy name {cls.name!r} is registered twice ({existing} and {cls})")
    if not cls.dataset_level and cls.single_map is Policy.single_map:
        raise TypeError(f"policy {cls.name!r}: a single-map policy implements single_map (or set dataset_level)")
    if cls.dataset_level and cls.score_dataset is Policy.score_dataset:
        raise TypeError(f"policy {cls.name!r}: a dataset-level policy implements score_dataset")
    if cls.from_summary is Policy.from_summary:
        raise TypeError(f"policy {cls.name!r} implements from_summary (the report rebuilds its boxes with it)")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_policy(name: str) -> None:
    """Remove a registered policy (tests and notebooks that register a throwaway one clean up with this)."""
    _REGISTRY.pop(name, None)


def load_entry_points() -> list[str]:
    """Import every module of the `wsl_bench.policies` entry-point group; returns the load errors (kept)."""
    return _PLUGINS.load_entry_points()



def policy_names() -> tuple[str, ...]:
    """Every registered policy name: the built-ins in `BUILTIN_MODULES` order, then the others as registered."""
    _PLUGINS.ensure()

    def rank(name: str) -> int:
        module = _REGISTRY[name].__module__
        return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)

    return tuple(sorted(_REGISTRY, key=rank))


def get_policy(name: str) -> Policy:
    """The registered policy `name`, or a ValueError listing the registered ones."""
    names = policy_names()
    cls = _REGISTRY.get(str(name))
    if cls is None:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(names)}")
    return cls()
