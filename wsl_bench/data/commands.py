"""`wsl-bench synth preview|export` and `wsl-bench datasets info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

synth_app = typer.Typer(help="SynthCXR, the embedded simulated cohort.\n\nExample: wsl-bench synth preview --out synth.png", no_args_is_help=True)
datasets_app = typer.Typer(help="Inspect datasets.\n\nExample: wsl-bench datasets info --data nih --root /data/ChestX-ray14 --json", no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@synth_app.command("preview")
def preview(
    out: Path = typer.Option(..., "--out", help="PNG (or PDF) file to write."),
    n: int = typer.Option(12, "--n", min=1, max=64, help="Images in the gallery."),
    seed: int = typer.Option(0, "--seed", help="Cohort seed."),
    size: int = typer.Option(256, "--size", min=32, max=1024, help="Generated image side in pixels."),
    confounders: str = typer.Option("", "--confounders", help="Comma list of shortcut cues (chest_tube,text_marker)."),
) -> None:
    """Draw a labelled gallery of SynthCXR images with their ground-truth boxes.

    Example: wsl-bench synth preview --out synth.png --n 12
    """
    from wsl_bench.data.preview import draw_gallery, pick_preview_indices
    from wsl_bench.data.synth import SynthConfig, load_synth

    try:
        cfg = SynthConfig(n_train=0, n_val=0, n_test=max(4 * n, 48), generate_size=size, image_size=min(size, 128), seed=seed, confounders=confounders)
    except ValueError as exc:
        _fail(str(exc))
    c = load_synth(cfg, cache_dir=False)
    path = draw_gallery(c.test, pick_preview_indices(c.test, n), out, title=f"SynthCXR (seed {seed}, {size} px): ground-truth boxes")
    typer.echo(f"wrote {path}")


@synth_app.command("export")
def export(
    out: Path = typer.Option(..., "--out", help="Folder to write the NIH layout into."),
    n: int = typer.Option(1000, "--n", min=0, help="Synthetic images (with --mirror-nih: extra train_val images)."),
    mirror_nih: bool = typer.Option(False, "--mirror-nih", help="Render the 880 real NIH box images' ids, labels and boxes."),
    size: int = typer.Option(1024, "--size", min=32, max=2048, help="PNG side in pixels (NIH: 1024)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a SynthCXR cohort in exactly the NIH ChestX-ray14 layout.

    Example: wsl-bench synth export --n 200 --out /tmp/nih-like --mirror-nih --size 256
    """
    from wsl_bench.data.export import export_nih_layout

    if n == 0 and not mirror_nih:
        _fail("--n 0 without --mirror-nih would write an empty dataset; give --n N")
    summary = export_nih_layout(out, n=n, size=size, seed=seed, mirror_nih=mirror_nih, progress=not as_json)
    typer.echo(json.dumps(summary, indent=2, sort_keys=True) if as_json else
               f"wrote {summary['images']} images ({summary['box_images']} with {summary['boxes']} boxes) to {out}")


@datasets_app.command("info")
def info(
    data: str = typer.Option("nih", "--data", help="nih or synth."),
    root: Optional[Path] = typer.Option(None, "--root", help="NIH data root (for --data nih)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    seed: int = typer.Option(0, "--seed", help="SynthCXR seed (for --data synth)."),
) -> None:
    """Counts, split sizes, boxes per label and missing files of a dataset.

    Example: wsl-bench datasets info --data nih --root /data/ChestX-ray14 --json
    """
    if data == "nih":
        from wsl_bench.data.nih import NIHDataError, dataset_info

        if root is None:
            _fail("--data nih needs --root DIR (the folder holding images_001… and the CSVs)")
        try:
            d = dataset_info(root)
        except NIHDataError as exc:
            _fail(str(exc))
    elif data == "synth":
        from wsl_bench.data.synth import SynthConfig, synth_info

        d = synth_info(SynthConfig(seed=seed))
    else:
        _fail(f"unknown --data {data!r}; choose nih or synth")
    if as_json:
        typer.echo(json.dumps(d, indent=2, sort_keys=True))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"dataset {data}")
        t.add_column("key")
        t.add_column("value")
        for k, v in d.items():
            t.add_row(str(k), json.dumps(v) if isinstance(v, (dict, list)) else str(v))
        Console().print(t)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `wsl-bench` app."""
    app.add_typer(synth_app, name="synth")
    app.add_typer(datasets_app, name="datasets")
