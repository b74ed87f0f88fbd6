"""report.md: the tables in Markdown, the figures linked, and the run's provenance."""

from __future__ import annotations

from pathlib import Path

import shlex

from wsl_bench.references import GUESS_REFERENCES
from wsl_bench.report.readers import per_reader_markdown
from wsl_bench.report.runs import RunSet
from wsl_bench.report.sanity import CEILING_METHODS, SanitySection
from wsl_bench.report.seeds import SeedSection
from wsl_bench.report.tables import SIG_MARK, Table, to_markdown


def run_command(rs: RunSet, run_dir: Path) -> str | None:
    """The `wsl-bench run` line that reproduces a run folder, or None when it cannot be told exactly.

    The run records its command line in manifest.json with the config hash it resolved to; that line is
    given when the hash is the folder's, its `--out` naming the folder as the report was given it (a folder
    moved or reached through a link is rebuilt where it now is). A folder without the record: the line is rebuilt from config.yaml
    (preset, seed, methods) and accepted only if it gives the same config hash as the manifest, so a run
    made with --set overrides or --ablate never gets a wrong command.
    """
    cfg, mf = rs.configs.get(run_dir, {}), rs.manifests.get(run_dir, {})
    recorded = mf.get("command")
    if (isinstance(recorded, dict) and isinstance(recorded.get("argv"), list) and recorded["argv"]
            and mf.get("config_hash") and recorded.get("config_hash") == mf["config_hash"]):
        argv = [str(a) for a in recorded["argv"]]
        for i, a in enumerate(argv):
            if a in ("--out", "-o") and i + 1 < len(argv):
                argv[i + 1] = str(run_dir)
            elif a.startswith("--out="):
                argv[i] = f"--out={run_dir}"
        return shlex.join(argv)
    # the references `wsl-bench run` adds by itself (the guesses, and the ceiling on exact masks); the config
    # hash check below refuses the command should that rule ever not rebuild the run's method list
    order = [m for m in cfg.get("methods_order", []) if m not in GUESS_REFERENCES and m not in CEILING_METHODS]
    if not (cfg.get("preset") and mf.get("config_hash") and order):
        return None
    try:
        from wsl_bench.config import build_config, run_config_hash

        data = cfg.get("data", {}) or {}
        rebuilt = build_config(order, data=data.get("name"), root=data.get("root"), preset=cfg["preset"], seed=int(cfg.get("seed", 0)))
        if run_config_hash(rebuilt) != mf["config_hash"]:
            return None
    except Exception:  # noqa: BLE001 - an unregistered method or an older config: no command, no guess
        return None
    parts = ["wsl-bench", "run", "--preset", str(cfg["preset"]), "--seed", str(cfg.get("seed", 0)), "--methods", ",".join(order)]
    if data.get("name") and data.get("name") != "synth":
        parts += ["--data", str(data["name"])] + (["--root", str(data["root"])] if data.get("root") else [])
    return shlex.join([*parts, "--out", str(run_dir)])


def provenance_lines(rs: RunSet) -> list[str]:
    """Run folder, policy, seed, versions and data fingerprint of each run, one bullet each."""
    lines = []
    for d in rs.run_dirs:
        mf = {**rs.configs.get(d, {}), **rs.manifests.get(d, {})}
        bits = [f"`{d}`"]
        data = rs.configs.get(d, {}).get("data")
        if isinstance(data, dict) and data.get("name"):
            bits.append(f"data {data['name']}" + (f" at {data['image_size']} px" if data.get("image_size") else ""))
        test = rs.configs.get(d, {}).get("test_data")
        if isinstance(test, dict) and test.get("name"):
            bits.append(f"test split of {test['name']} (external validation)")
        policies = sorted({str(m.summary.get("policy", "?")) for m in rs.methods.values() if m.run_dir == d})
        bits.append("policy " + ", ".join(policies))
        for key, title in (("preset", "preset"), ("seed", "seed"), ("git_revision", "git"), ("data_fingerprint", "data"),
                           ("config_hash", "config")):
            if key in mf:
                bits.append(f"{title} `{str(mf[key])[:12]}`")
        versions = mf.get("versions")
        if isinstance(versions, dict) and versions:
            bits.append("versions " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
        plat = mf.get("platform")
        if isinstance(plat, dict) and plat.get("cpu_capability"):
            bits.append(f"CPU {plat.get('cpu') or plat.get('machine') or '?'} ({plat['cpu_capability']} kernels)")
        lines.append("- " + "; ".join(bits))
    return lines


def render_markdown(
    rs: RunSet,
    tables: list[Table],
    figures: list[tuple[str, str]],
    reference: str | None,
    notes: list[str],
    command: str,
    sanity: SanitySection | None = None,
    seeds: SeedSection | None = None,
    label_mapping: list[str] | None = None,
) -> str:
    """The whole report.md; `figures` are (title, relative PNG path) pairs; `sanity` is the first section,
    `seeds` (runs that differ only in seed) the second; `label_mapping` (the lines of an external-validation
    run's mapping section) comes before them."""
    runs = [c for c in (run_command(rs, d) for d in rs.run_dirs) if c]
    out = [
        "# wsl-bench report",
        "",
        f"Regenerate with: `{command}`",
        "",
        *([f"The run{'s' if len(runs) > 1 else ''}: " + "; ".join(f"`{c}`" for c in runs), ""] if runs else []),
        "Methods: "
        + ", ".join(
            f"`{n}`" + (" (sanity baseline)" if m.is_reference else "") + (" (reference for `*`)" if n == reference else "")
            for n, m in rs.methods.items()
        )
        + ".",
        "",
        *provenance_lines(rs),
        "",
    ]
    if reference:
        out += [
            f"`{SIG_MARK}` marks a value that differs from the reference method `{reference}` "
            "(paired patient bootstrap, two-sided p < 0.05). Bold: best in its column.",
            "",
        ]
    out += [f"> {n}" for n in notes] + ([""] if notes else [])
    out += label_mapping or []
    if sanity is not None:
        out += sanity_markdown(sanity)
    if seeds is not None and seeds.tables:
        out += seeds_markdown(seeds)
    for t in tables:
        out += [f"## {t.title}", "", t.caption, "", to_markdown(t.display, t.bold), f"CSV: `tables/{t.name}.csv`, LaTeX: `tables/{t.name}.tex`", ""]
    out += per_reader_markdown(rs)
    for title, rel in figures:
        out += [f"## {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(out).rstrip() + "\n"


def sanity_markdown(sanity: SanitySection) -> list[str]:
    """The section "Does each method localize beyond a guess?": verdict table, its rules, the gain cells."""
    out = [f"## {sanity.title}", ""]
    out += [f"> {n}" for n in sanity.notes] + ([""] if sanity.notes else [])
    for i, t in enumerate(sanity.tables):
        if i > 0:
            out += [f"### {t.title}", ""]
        out += [t.caption, "", to_markdown(t.display, t.bold), f"CSV: `tables/{t.name}.csv`, LaTeX: `tables/{t.name}.tex`", ""]
        if i == 0:
            out += ["Verdict rules:", "", *(f"- {r}" for r in sanity.rules), ""]
    return out


def seeds_markdown(seeds: SeedSection) -> list[str]:
    """The section "Rankings across seeds": spread tables, the ranking per seed, Kendall's τ-b, the rule."""
    out = [f"## {seeds.title}", ""]
    out += [f"> {n}" for n in seeds.notes] + ([""] if seeds.notes else [])
    for t in seeds.tables:
        out += [f"### {t.title}", "", t.caption, "", to_markdown(t.display, t.bold),
                f"CSV: `tables/{t.name}.csv`, LaTeX: `tables/{t.name}.tex`", ""]
    out += [seeds.verdict, "", "The rule:", "", *(f"- {r}" for r in seeds.rules), ""]
    return out


def write_markdown(path: Path, text: str) -> Path:
    from wsl_bench.io import write_text

    write_text(path, text)
    return path


def headline_markdown(report_dir: str | Path, link_base: str | None = None) -> str:
    """The headline of a written report for a README: its macro IoU table and accuracy-curve figure,
    with links relative to the repository root (`link_base`, default: the report folder as given)."""
    report_dir = Path(report_dir)
    base = (link_base if link_base is not None else report_dir.as_posix()).rstrip("/")
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    start = md.index("## Macro IoU accuracy (headline)")
    section = md[start:].split("\n## ", 1)[0].rstrip()
    body = section.split("\n", 1)[1].strip().replace("`tables/", f"`{base}/tables/")
    sig = next((line for line in md.splitlines() if line.startswith("`*` marks")), "")
    return (
        f"Macro IoU accuracy on [{base}]({base}/report.md) (regenerate: see its first lines).\n\n{body}\n\n"
        + (f"{sig}\n\n" if sig else "")
        + f"![IoU accuracy vs T(IoU), per class, 95 % CI bands]({base}/figures/iou_curves.png)\n"
    )
