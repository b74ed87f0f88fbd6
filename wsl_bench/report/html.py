"""index.html: one self-contained page (inline CSS and JS, no network) with sortable tables,
the figures, and a gallery filterable by class, method and case set.

Images are referenced by relative paths inside the report folder, so the page works from disk,
from a web server, and inside a zip.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import jinja2
import markupsafe

from wsl_bench.io import write_text
from wsl_bench.labels import box_to_finding
from wsl_bench.report.gallery import Tile
from wsl_bench.report.label_mapping import MappingSection
from wsl_bench.report.runs import RunSet
from wsl_bench.report.sanity import SanitySection
from wsl_bench.report.seeds import SeedSection
from wsl_bench.report.tables import Table

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("wsl_bench.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _sort_value(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(f) else repr(f)


def inline_markdown(text: str) -> markupsafe.Markup:
    """The report's Markdown notes as safe HTML: only **bold** and `code` are marked up, the rest escaped."""
    html = str(markupsafe.escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html)
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html))


def table_context(t: Table, colors: dict[str, str], references: dict[str, bool]) -> dict:
    """Rows of a display table with the numbers behind each cell (for sorting) and best marks."""
    rows = []
    prev_first = None
    index_names = [n or "" for n in t.display.index.names]
    for i, (key, row) in enumerate(t.display.iterrows()):
        key = key if isinstance(key, tuple) else (key,)
        keys = []
        for k in key:
            k = str(k)
            keys.append({"text": k, "sort": k, "color": colors.get(k), "reference": references.get(k, False)})
        cells = []
        for j, text in enumerate(row):
            v = t.values.iat[i, j] if t.values is not None else math.nan
            sort = str(text) if str(t.display.columns[j]) in t.text_columns else _sort_value(v)
            cls = str(t.cell_classes.iat[i, j] or "") if t.cell_classes is not None else ""
            cells.append({"text": str(text), "sort": sort, "best": bool(t.bold.iat[i, j]) if t.bold is not None else False,
                          "cls": cls})
        rows.append({"key_cells": keys, "cells": cells, "groupstart": len(key) > 1 and key[0] != prev_first and i > 0})
        prev_first = key[0]
    groups = list(dict.fromkeys(str(k[0]) for k in t.display.index)) if t.display.index.nlevels > 1 else []
    return {"name": t.name, "title": t.title, "caption": t.caption, "index_names": index_names,
            "columns": [{"text": str(c), "type": "text" if str(c) in t.text_columns else "num"} for c in t.display.columns],
            "rows": rows, "groups": groups,
            "group_name": index_names[0] if groups else ""}


def render_html(
    rs: RunSet,
    out_dir: Path,
    tables: list[Table],
    figures: list,
    tiles: list[Tile],
    colors: dict[str, str],
    reference: str | None,
    notes: list[str],
    command: str,
    provenance: list[str],
    sanity: SanitySection | None = None,
    seeds: SeedSection | None = None,
    label_mapping: MappingSection | None = None,
) -> str:
    """The whole index.html; `sanity` is the first section (verdicts also go under gallery tiles), `seeds`
    (runs that differ only in seed) the second; `label_mapping` (an external-validation run's) comes before them."""
    refs = {n: m.is_reference for n, m in rs.methods.items()}
    verdicts = sanity.verdicts if sanity is not None else {}
    tile_ctx = []
    for t in tiles:
        tile_ctx.append(
            {
                "src": t.path.relative_to(out_dir).as_posix(),
                "alt": f"{t.method or 'image'} {t.case.image_id} {t.case.label}",
                "label": box_to_finding(t.case.label),
                "method": t.method or "",
                "method_text": t.method or "image + ground truth",
                "color": colors.get(t.method) if t.method else None,
                "kind": t.kind,
                "image_id": t.case.image_id,
                "iou": "" if math.isnan(t.iou) else f"{t.iou:.2f}",
                "verdict": verdicts[t.method].verdict if t.method in verdicts and verdicts[t.method].fails else "",
            }
        )
    return _ENV.get_template("index.html.j2").render(
        command=command,
        provenance=[p.lstrip("- ").replace("`", "") for p in provenance],
        methods=[{"name": n, "color": colors[n], "reference": refs[n]} for n in rs.methods],
        reference=reference,
        notes=notes,
        tables=[table_context(t, colors, refs) for t in tables],
        sanity={
            "title": sanity.title if sanity else "Does each method localize beyond a guess?",
            "tables": [table_context(t, colors, refs) for t in (sanity.tables if sanity else [])],
            "rules": [inline_markdown(r) for r in (sanity.rules if sanity and sanity.tables else [])],
            "notes": [inline_markdown(n) for n in (sanity.notes if sanity else ["Not computed."])],
        },
        seeds=None if seeds is None or not seeds.tables else {
            "title": seeds.title,
            "tables": [table_context(t, seeds.colors, seeds.references) for t in seeds.tables],
            "verdict": inline_markdown(seeds.verdict),
            "rules": [inline_markdown(r) for r in seeds.rules],
            "notes": [inline_markdown(n) for n in seeds.notes],
        },
        label_mapping=None if label_mapping is None else {
            "title": label_mapping.title,
            "intro": inline_markdown(label_mapping.intro),
            "rows": label_mapping.rows,
            "unused": ", ".join(label_mapping.unused) or "none",
            "csv": label_mapping.csv,
        },
        figures=[{"stem": f.stem, "title": f.title, "caption": f.caption, "src": f.png.relative_to(out_dir).as_posix()} for f in figures],
        tiles=tile_ctx,
        gallery_classes=sorted({c["label"] for c in tile_ctx}),
    )


def write_html(path: Path, html: str) -> Path:
    write_text(path, html)
    return path
