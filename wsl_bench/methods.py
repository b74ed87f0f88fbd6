"""The method protocol and the registry every method registers itself in.

A method is a class with `fit/predict/explain/save/load`; it registers itself with
`@register_method("name")`. Method packages (ours and users') are found through the
entry-point group ``wsl_bench.methods``: loading an entry point imports its module, and the
import registers the classes. `wsl_bench` never imports a method package by name.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch

from wsl_bench.plugins import load_group

ENTRY_POINT_GROUP = "wsl_bench.methods"


@dataclass
class FitContext:
    """What the harness hands a method's `fit`: where to write, how to train, on what hardware."""

    checkpoint_dir: Path
    seed: int = 0
    preset: str = "quick"
    image_size: int = 128
    max_epochs: int | None = None  # None: the method's preset default
    batch_size: int | None = None  # the GLOBAL batch: under DDP each of N ranks loads batch_size / N
    num_workers: int = 0
    accelerator: str = "auto"  # passed to Lightning
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None  # None: bf16-mixed on GPU, 32-true on CPU
    compile: bool | str = False  # torch.compile the module: True (inductor) or a backend name, e.g. "aot_eager"
    channels_last: bool | None = None  # None: channels-last memory format on GPU, contiguous on CPU
    run_dir: Path | None = None  # the run folder, for methods that cache shared stages (e.g. a teacher)
    extra: dict[str, Any] = field(default_factory=dict)  # train_module sets extra["fit_processes"] (DDP world)


class Method(abc.ABC):
    """A weakly-supervised localization method.

    Contract (../shared/design.md): `predict(images) -> probs [B,14]`,
    `explain(images, classes) -> maps [B,len(classes),h,w]` at the method's native resolution,
    batched, with no per-image Python loop in the hot path. `images` are float tensors [B,1,H,W]
    in [0,1]; `classes` are indices into `wsl_bench.labels.FINDINGS`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    trainable: ClassVar[bool] = True
    # The family the report groups this method with in its figures (e.g. "cam", "vit"); empty: the
    # last part of the class's module name (`family_of_module`).
    family: ClassVar[str] = ""
    # Config overrides per preset ("quick": SynthCXR at 128 px on CPU; "paper": NIH at paper settings).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Component name -> config overrides that remove it; `wsl-bench run --ablate a,b` trains one
    # variant per component, named "<method>-no-<component>".
    ablations: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: dict[str, Any] | None = None, device: str | torch.device = "cpu"):
        self.config = dict(config or {})
        self.device = torch.device(device)

    # -- training / persistence -------------------------------------------------------------
    def fit(self, train, val, ctx: FitContext) -> None:  # noqa: B027 - references need no fit
        """Train from image-level labels only. Must write what `load` needs under ctx.checkpoint_dir."""

    def save(self, directory: Path) -> None:  # noqa: B027
        """Write the trained state with `wsl_bench.checkpoints.save_checkpoint` (safetensors + JSON)."""

    def load(self, directory: Path) -> None:  # noqa: B027
        """Load what `save`/`fit` wrote with `wsl_bench.checkpoints.load_checkpoint` (safetensors + JSON)."""

    def init_untrained(self) -> None:  # noqa: B027 - methods that build their network in __init__ need nothing
        """Build the network with its initial weights and no data, so that `run --dry-run` can time it."""

    def to(self, device: str | torch.device) -> "Method":
        """Move the method, and its network if it keeps one as `self.net`, to `device`."""
        self.device = torch.device(device)
        net = getattr(self, "net", None)
        if isinstance(net, torch.nn.Module):
            net.to(self.device)
        return self

    # -- inference ---------------------------------------------------------------------------
    @abc.abstractmethod
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B,14]."""

    @abc.abstractmethod
    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """Heatmaps [B,len(classes),h,w]; higher means more evidence of the finding there."""


@dataclass(frozen=True)
class MethodInfo:
    name: str
    cls: type[Method]
    description: str
    paper: str
    defaults: dict[str, Any]

    @property
    def family(self) -> str:
        """The method's family: the class's `family`, else the last part of its module name."""
        return self.cls.family or family_of_module(self.cls.__module__)


# Module names too generic to name a family: the package above them does (clarity.method -> "clarity").
_GENERIC_MODULES = frozenset({"method", "methods", "model", "models", "core", "main", "__init__", "__main__"})


def family_of_module(module: str) -> str:
    """"baselines.cam" -> "cam"; "clarity.method" -> "clarity" (a generic last part names its package)."""
    parts = [p for p in module.split(".") if p]
    if not parts:
        return ""
    if parts[-1] in _GENERIC_MODULES and len(parts) > 1:
        return parts[-2] if parts[-2] not in _GENERIC_MODULES else parts[0]
    return parts[-1]


_REGISTRY: dict[str, MethodInfo] = {}
_ENTRY_POINTS_LOADED = False
_ENTRY_POINT_ERRORS: list[str] = []


def register_method(name: str, **defaults: Any) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method under `name`, with config defaults for this name.

    The same class may be registered under several names with different defaults
    (e.g. `gradcam` and `gradcam++` are one class with another `cam` default).
    """

    def deco(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) must decorate a wsl_bench.methods.Method subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"method name {name!r} is registered twice ({existing.cls} and {cls})")
        desc = defaults.pop("description", None) or cls.description or (cls.__doc__ or "").strip().splitlines()[0]
        paper = defaults.pop("paper", None) or cls.paper
        _REGISTRY[name] = MethodInfo(name=name, cls=cls, description=desc, paper=paper, defaults=dict(defaults))
        if not cls.name:
            cls.name = name
        return cls

    return deco


def unregister_method(name: str) -> None:
    """Remove the method registered as `name` (tests and notebooks that register a throwaway one clean up with this)."""
    load_entry_points()  # else an entry point's method would come back on the next lookup
    if name not in _REGISTRY:
        raise KeyError(f"cannot unregister method {name!r}: no method is registered under that name; "
                       f"registered: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    del _REGISTRY[name]


def load_entry_points(force: bool = False) -> list[str]:
    """Import every module of the `wsl_bench.methods` entry-point group; returns the load errors (kept)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and not force:
        return list(_ENTRY_POINT_ERRORS)
    errors = load_group(ENTRY_POINT_GROUP, metadata.entry_points)  # looked up here, so tests can patch it
    _ENTRY_POINTS_LOADED = True
    _ENTRY_POINT_ERRORS[:] = errors
    return errors


def available_methods() -> dict[str, MethodInfo]:
    load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def get_method_info(name: str) -> MethodInfo:
    methods = available_methods()
    if name not in methods:
        raise KeyError(
            f"unknown method {name!r}; registered: {', '.join(methods) or '(none)'}. "
            "Run `wsl-bench methods` to list them, or register your own with the "
            f"'{ENTRY_POINT_GROUP}' entry-point group."
        )
    return methods[name]


def resolve_config(name: str, preset: str | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Registered defaults, then the preset's overrides, then the user's `config`."""
    info = get_method_info(name)
    preset_cfg = info.cls.presets.get(preset, {}) if preset else {}
    return {**info.defaults, **preset_cfg, **(config or {})}


def create_method(
    name: str,
    config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    preset: str | None = None,
) -> Method:
    """Instantiate a registered method (timm's `create_model` in spirit)."""
    info = get_method_info(name)
    merged = resolve_config(name, preset, config)
    method = info.cls(merged, device=device)
    method.name = name
    return method
