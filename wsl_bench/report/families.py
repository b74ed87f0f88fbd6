"""Which family each method of a report belongs to (for the figures' small multiples and gallery pages).

The family is the registered class's `family` (`wsl_bench.methods.MethodInfo.family`: "cam", "vit",
"hybrid", "attributions", "clarity", ...), looked up by the registry name the run's config recorded
for the method (so an ablation variant "clarity-no-distill" is in the "clarity" family). A method the
registry does not know (a plug-in not installed here) falls back to its name's first word.
"""

from __future__ import annotations

from wsl_bench.report.runs import MethodScores, RunSet
from wsl_bench.report.sanity import role_of


def registry_name(rs: RunSet, m: MethodScores) -> str:
    """The registered method behind a run's method name (config.yaml `methods.<name>.registry`)."""
    spec = (rs.configs.get(m.run_dir, {}).get("methods") or {}).get(m.method)
    reg = spec.get("registry") if isinstance(spec, dict) else None
    return str(reg) if reg else m.method


def _registry() -> dict:
    try:
        from wsl_bench.methods import available_methods

        return available_methods()
    except Exception:  # noqa: BLE001 - a report must not fail because a method package does not import
        return {}


def family_of(name: str, registry: dict) -> str:
    """The family of a registry name; "x-no-y" ablations take x's; unknown names their first word."""
    info = registry.get(name)
    if info is None and "-no-" in name:
        info = registry.get(name.split("-no-", 1)[0])
    if info is not None:
        try:
            return str(info.family)
        except AttributeError:
            pass
    return name.split("-", 1)[0]


def method_families(rs: RunSet) -> dict[str, str]:
    """Report name -> family, for the methods (role "method"); guesses and the ceiling are left out."""
    registry = _registry()
    return {n: family_of(registry_name(rs, m), registry) for n, m in rs.methods.items() if role_of(m) == "method"}


def reference_lines(rs: RunSet) -> list[str]:
    """The methods every panel draws for comparison: the guesses, then the supervised ceiling."""
    roles = {n: role_of(m) for n, m in rs.methods.items()}
    return [n for n, r in roles.items() if r == "guess"] + [n for n, r in roles.items() if r == "ceiling"]
