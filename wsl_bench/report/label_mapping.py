"""The report section on label mapping: how an external test dataset's findings map onto the suite's.

An external-validation run (`wsl-bench run --test-data NAME`) trains on one dataset and scores on another's
test split; its data stage writes the test dataset's mapping rows (`wsl_bench.data.registry.mapping_rows`) to
data/label_mapping.csv. The report copies them to tables/label_mapping.csv and says, in report.md and index.html,
which findings were mapped onto what, and which were not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wsl_bench.io import atomic_path
from wsl_bench.report.runs import RunSet

RUN_FILE = Path("data") / "label_mapping.csv"  # written by the run's data stage (wsl_bench.stages.data)
COLUMNS = ("dataset", "finding", "suite", "localized")
TABLE_NAME = "label_mapping"
SECTION_TITLE = "Label mapping (external validation)"


def mapping_table(rs: RunSet) -> pd.DataFrame | None:
    """The mapping rows of every external-validation run among `rs` (duplicates dropped), or None."""
    frames = []
    for d in rs.run_dirs:
        path = Path(d) / RUN_FILE
        if path.is_file():
            frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{RUN_FILE} lacks column(s) {missing}; re-run `wsl-bench run` into the folder to rewrite it")
    return table[list(COLUMNS)].drop_duplicates().reset_index(drop=True)


@dataclass(frozen=True)
class MappingSection:
    """The section as report.md and index.html show it: a title, one paragraph (Markdown `code` spans), the
    mapping rows, the test dataset's findings left unused and the CSV's path in the report folder."""

    title: str
    intro: str
    rows: list[dict[str, str]]  # dataset, finding, suite ("(not used)" when none), localized ("yes" / "no")
    unused: list[str]  # "<dataset>: <finding>"
    csv: str


def mapping_section(rs: RunSet, table: pd.DataFrame) -> MappingSection:
    """What was trained on and scored on, the mapping table, and the findings left unused."""
    pairs = sorted({(str(c.get("data", {}).get("name", "?")), str(c["test_data"].get("name", "?")))
                    for c in rs.configs.values() if isinstance(c.get("test_data"), dict)})
    trained = "; ".join(f"trained on `{a}`, scored on the test split of `{b}`" for a, b in pairs)
    intro = ((f"The methods were {trained}. " if trained else "")
             + "The test dataset's findings map onto the suite's ChestX-ray14 vocabulary as below; boxes and "
             "labels are scored under their suite names.")
    rows = [{"dataset": r.dataset, "finding": r.finding, "suite": r.suite or "(not used)",
             "localized": "yes" if r.localized == "True" else "no"} for r in table.itertuples(index=False)]
    unused = sorted({f"{r.dataset}: {r.finding}" for r in table.itertuples(index=False) if not r.suite})
    return MappingSection(SECTION_TITLE, intro, rows, unused, f"tables/{TABLE_NAME}.csv")


def section_markdown(section: MappingSection) -> list[str]:
    """The section's lines in report.md."""
    out = [f"## {section.title}", "", section.intro, ""]
    out += ["| dataset | finding | suite finding | localized |", "|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['finding']} | {r['suite']} | {r['localized']} |" for r in section.rows]
    out += ["", "Not used (no suite finding): " + (", ".join(section.unused) if section.unused else "none") + ".",
            f"CSV: `{section.csv}`", ""]
    return out


def write_section(rs: RunSet, tables_dir: Path) -> MappingSection | None:
    """Write tables/label_mapping.csv and return the section (None, and no file, for ordinary runs)."""
    table = mapping_table(rs)
    if table is None:
        return None
    with atomic_path(Path(tables_dir) / f"{TABLE_NAME}.csv") as tmp:
        table.to_csv(tmp, index=False)
    return mapping_section(rs, table)


def write_mapping(rs: RunSet, tables_dir: Path) -> list[str]:
    """Write tables/label_mapping.csv and return the markdown section (both empty for ordinary runs)."""
    section = write_section(rs, tables_dir)
    return section_markdown(section) if section is not None else []
