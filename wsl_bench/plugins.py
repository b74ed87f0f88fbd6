"""Entry-point loading shared by the registries (methods, datasets, box policies, metrics)."""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Callable, Iterable


def load_group(group: str, entry_points: Callable[..., Iterable] | None = None) -> list[str]:
    """Import every module of the entry-point group `group`; returns the load errors.

    Importing a module registers what it defines; a broken plug-in is reported, never raised, so that it
    cannot take the suite down. `entry_points`: the lookup to use (default `importlib.metadata.entry_points`)."""
    errors = []
    for ep in (entry_points or metadata.entry_points)(group=group):
        try:
            ep.load()
        except Exception as exc:
            errors.append(f"entry point {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}")
    return errors


class Plugins:
    """A registry's loading state: its built-in modules, then its entry-point group, imported once.

    A failed import leaves it unloaded, so the next lookup tries again."""

    def __init__(self, group: str, builtins: Iterable[str]):
        self.group, self.builtins = group, tuple(builtins)
        self.loaded = False
        self.errors: list[str] = []

    def load_entry_points(self) -> list[str]:
        """Import the entry-point group; the errors are kept for the CLI to show."""
        self.errors[:] = load_group(self.group)
        return list(self.errors)

    def ensure(self) -> None:
        if self.loaded:
            return
        self.loaded = True  # before the imports: a module that looks the registry up while loading must not recurse
        try:
            for mod in self.builtins:
                importlib.import_module(mod)
            self.load_entry_points()
        except BaseException:
            self.loaded = False
            raise
