"""Checks of one setting value (a whole number, a real in a range, a bool, known keys, a seed).

Each returns the problem as one sentence naming the setting, or None, so a caller can collect every problem
of a command line or config and report them all at once. Used by the run settings (`wsl_bench.settings`)
and by the scorer's options (`wsl_bench.metrics.options`).
"""

from __future__ import annotations

import math
from typing import Any

MAX_SEED = 2**32 - 1  # NumPy's seed range


def is_int(v: Any) -> bool:
    """A whole number (a bool is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or float (a bool is not one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def whole(where: str, v: Any, lo: int | None = None, hi: int | None = None, *, none_ok: bool = False) -> str | None:
    """`v` must be a whole number in [lo, hi] (or None when `none_ok`)."""
    if v is None and none_ok:
        return None
    span = f"{lo if lo is not None else '-inf'} .. {hi if hi is not None else 'inf'}"
    extra = " (or null)" if none_ok else ""
    if not is_int(v):
        return f"{where}={v!r} must be a whole number in {span}{extra}"
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        return f"{where}={v} is out of range; use a whole number in {span}{extra}"
    return None


def real(where: str, v: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False, none_ok: bool = False) -> str | None:
    """`v` must be a finite number in the interval (open or closed ends as given)."""
    if v is None and none_ok:
        return None
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    span = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"
    if not is_number(v) or not math.isfinite(float(v)):
        return f"{where}={v!r} must be a finite number in {span}"
    v = float(v)
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        return f"{where}={v:g} is out of range; use a number in {span}"
    return None


def boolean(where: str, v: Any, *, none_ok: bool = False) -> str | None:
    """`v` must be true or false (or None when `none_ok`)."""
    if isinstance(v, bool) or (v is None and none_ok):
        return None
    return f"{where}={v!r} must be true or false" + (" (or null)" if none_ok else "")


def unknown_keys(where: str, given, known) -> str | None:
    """Every key of `given` must be in `known`; the problem lists the known ones."""
    extra = sorted(set(given) - set(known))
    if extra:
        return f"unknown {where} setting(s) {extra}; known: {', '.join(sorted(map(str, known)))}"
    return None


def seed_problem(v: Any, where: str = "--seed") -> str | None:
    """A seed is a whole number in 0 .. 2**32 - 1."""
    return whole(where, v, 0, MAX_SEED)
