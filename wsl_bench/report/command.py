"""`wsl-bench report`: tables, figures, an HTML viewer and report.md from one or more run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `report` to the `wsl-bench` app."""

    @app.command(
        "report",
        help=(
            "Write a comparison report (report.md, index.html, tables/ as CSV + LaTeX, figures/ as PNG + PDF) "
            "from the score tables of one or more run folders.\n\n"
            "Example: wsl-bench report runs/quick --out reports/quick --reference gradcam"
        ),
    )
    def report(
        runs: list[Path] = typer.Argument(..., help="Run folders written by `wsl-bench run` (scores/ must exist)."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to write the report into (created if missing)."),
        reference: Optional[str] = typer.Option(
            None, "--reference", "-r", help="Method every other one is tested against (paired patient bootstrap). "
            "Default: the first method of the first run."
        ),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates of the paired tests."),
        seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap."),
        per_class_tests: bool = typer.Option(False, "--per-class-tests", help="Test every class cell against the "
                                             "reference too (default: the macro at every threshold)."),
        check: bool = typer.Option(False, "--check", help="Open index.html in headless Chromium afterwards and "
                                   "fail on console errors or images that do not load (saves screenshot.png)."),
    ) -> None:
        from rich.console import Console

        from wsl_bench.report import ReportInputError, write_report

        console = Console(stderr=True)
        try:
            with console.status("writing report"):
                path = write_report(runs, out, reference=reference, n_boot=n_boot, seed=seed, per_class_tests=per_class_tests)
        except ReportInputError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"wrote [bold]{path}[/bold] and {path.parent / 'index.html'}")
        if check:
            from wsl_bench.report.browser import check_page

            result = check_page(path.parent / "index.html", path.parent / "screenshot.png")
            for msg in result.console_errors:
                console.print(f"[red]browser:[/red] {msg}")
            for src in result.broken_images:
                console.print(f"[red]image did not load:[/red] {src}")
            if not result.ok:
                raise typer.Exit(1)
            console.print(f"index.html renders cleanly ({len(result.images)} images); screenshot at {result.screenshot}")
