"""`wsl-bench synth preview|export` and `wsl-bench datasets list|info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

synth_app = typer.Typer(help="SynthCXR, the embedded simulated cohort.\n\nExample: wsl-bench synth preview --out synth.png", no_args_is_help=True)
datasets_app = typer.Typer(help="List and inspect the registered datasets.\n\nExample: wsl-bench datasets list", no_args_is_help=True)


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
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset layout into."),
    n: Optional[int] = typer.Option(
        None, "--n", min=0,
        help="Synthetic images (default 1000). With --mirror: extra training images, for datasets whose mirror "
             "takes them (nih: train_val images, default 1000).",
    ),
    mirror: Optional[str] = typer.Option(
        None, "--mirror",
        help="Write the folder layout of this registered dataset with its real annotation geometry and synthetic "
             "pixels (`wsl-bench datasets list` says which datasets have one).",
    ),
    mirror_nih: bool = typer.Option(False, "--mirror-nih", help="Same as --mirror nih."),
    images: Optional[str] = typer.Option(
        None, "--images", metavar="all|boxed|N",
        help="With --mirror, for datasets whose mirror takes it (rsna-pneumonia, siim-pneumothorax, vindr-cxr): "
             "which films get pixels: all, boxed (the films with an annotation; the default) or N (the first N "
             "films of the annotation file). Films are uncompressed DICOM of about size x size bytes: at the "
             "default --size 1024 about 1 MB each, so boxed takes about 6.3 GB for RSNA (6,012 films), 2.8 GB "
             "for SIIM (2,669) and 4.6 GB for VinDr (4,394), and all about 28, 13 and 16 GB; --size 256 takes "
             "1/16 of that.",
    ),
    size: int = typer.Option(
        1024, "--size", min=32, max=2048,
        help="Image side in pixels (NIH: 1024). Disk grows with its square: see --images for the film mirrors.",
    ),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a SynthCXR cohort in the NIH ChestX-ray14 layout, or a dataset's layout with its real geometry.

    Example: wsl-bench synth export --n 200 --out /tmp/nih-like --mirror nih --size 256

    Example: wsl-bench synth export --mirror rsna-pneumonia --images 100 --size 256 --out /tmp/rsna-like
    """
    if mirror_nih:
        if mirror not in (None, "nih"):
            _fail(f"--mirror-nih is --mirror nih; give either --mirror {mirror} or --mirror-nih, not both")
        mirror = "nih"
    if mirror is None:
        from wsl_bench.data.export import export_nih_layout

        if images is not None:
            _fail("--images chooses the films of a --mirror NAME; give --mirror NAME too, or drop --images")
        n = 1000 if n is None else n
        if n == 0:
            _fail("--n 0 without --mirror would write an empty dataset; give --n N (or --mirror NAME)")
        summary = export_nih_layout(out, n=n, size=size, seed=seed, mirror_nih=False, progress=not as_json)
    else:
        summary = _export_mirror(mirror, out, n=n, images=images, size=size, seed=seed, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    elif all(k in summary for k in ("images", "listed_images", "box_images", "boxes")):
        typer.echo(f"wrote {summary['images']} of {summary['listed_images']} films to {out}; the annotation file "
                   f"holds every film ({summary['box_images']} with {summary['boxes']} boxes)")
    elif all(k in summary for k in ("images", "box_images", "boxes")):
        typer.echo(f"wrote {summary['images']} images ({summary['box_images']} with {summary['boxes']} boxes) to {out}")
    else:
        typer.echo(f"wrote {out}: " + json.dumps(summary, sort_keys=True))


def mirror_images(value: str) -> str | int:
    """An `--images` value: "all", "boxed" or a whole number of films; a ValueError naming the fix otherwise."""
    text = value.strip().lower()
    if text in ("all", "boxed"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"--images {value!r}: give all, boxed or a whole number of films (e.g. --images 100)")


def _export_mirror(name: str, out: Path, *, n: Optional[int], images: Optional[str], size: int, seed: int,
                   progress: bool) -> dict:
    """`get_dataset(name).export_mirror(...)`, passing `n` and `images` only to a mirror that takes them."""
    import inspect

    from wsl_bench.data.registry import DatasetError, get_dataset, has_mirror

    try:
        ds = get_dataset(name)
        if not has_mirror(type(ds)):
            return ds.export_mirror(out, size=size, seed=seed, progress=progress)  # says which datasets have one
        takes = inspect.signature(ds.export_mirror).parameters
        extra: dict = {}
        if n is not None:
            if "n" not in takes:
                _fail(f"--mirror {name} writes only the dataset's annotated images; drop --n")
            extra["n"] = n
        if images is not None:
            if "images" not in takes:
                _fail(f"--mirror {name} writes a fixed set of images and takes no --images; drop --images")
            try:
                extra["images"] = mirror_images(images)
            except ValueError as exc:
                _fail(str(exc))
        return ds.export_mirror(out, size=size, seed=seed, progress=progress, **extra)
    except DatasetError as exc:
        _fail(str(exc))


@datasets_app.command("list")
def list_datasets(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with each dataset's mapping table)."),
) -> None:
    """Every registered dataset: what it is, what it localizes (suite findings), masks, readers, where to get it.

    Example: wsl-bench datasets list --json
    """
    from wsl_bench.data.registry import available_datasets, describe, entry_point_errors

    rows = [describe(cls()) for cls in available_datasets().values()]
    for err in entry_point_errors():
        typer.secho(f"warning: {err}", fg=typer.colors.YELLOW, err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    yes = {True: "yes", False: "no"}
    for r in rows:
        masks = "exact" if r["exact_masks"] else yes[r["has_masks"]]
        typer.echo(f"{r['name']}\n  {r['description']}")
        typer.echo(f"  localizes (suite findings): {', '.join(r['localizes']) or '(none)'}")
        typer.echo(f"  masks: {masks}   readers: {yes[r['readers']]}   needs --root: {yes[r['needs_root']]}   "
                   f"mirror: {yes[r['mirror']]}")
        typer.echo(f"  source: {r['source']}")


@datasets_app.command("info")
def info(
    data: str = typer.Option("nih", "--data", help="A registered dataset (see `wsl-bench datasets list`)."),
    root: Optional[Path] = typer.Option(None, "--root", help="The dataset folder (for datasets read from disk)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    seed: int = typer.Option(0, "--seed", help="Cohort seed (for --data synth)."),
) -> None:
    """Counts, split sizes, boxes per label and missing files of a dataset.

    Example: wsl-bench datasets info --data nih --root /data/ChestX-ray14 --json
    """
    from wsl_bench.data.registry import DatasetError, get_dataset

    try:
        d = get_dataset(data).info(root, seed=seed)
    except DatasetError as exc:
        _fail(str(exc))
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
