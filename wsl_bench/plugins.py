"""Entry-point loading shared by the registries (methods, datasets, box policies, metrics)."""

from __future__ import annotations

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
