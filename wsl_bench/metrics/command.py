"""`wsl-bench score`: score any heatmap bundle against NIH-format boxes, from files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def score_command(
    heatmaps: Path = typer.Option(..., "--heatmaps", help="Bundle .npz with keys '<image id>::<finding label>' (2-D maps, any size)."),
    boxes: Path = typer.Option(..., "--boxes", help="NIH BBox_List_2017.csv (or a csv with image_id,label,x,y,w,h)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for per_box.csv and summary.json."),
    labels: Optional[Path] = typer.Option(
        None, "--labels", help="Data_Entry_2017.csv (or a run's data/images.csv): patient ids for the bootstrap "
        "and the calibration split; also the labels for AUROC with --probs. Without it images are the unit."
    ),
    probs: Optional[Path] = typer.Option(None, "--probs", help="CSV image_id + one column per finding: adds AUROC (needs --labels)."),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="Side of the (square) original images the boxes refer to. Default: sizes stored "
        "in the bundle, else 1024 (NIH)."
    ),
    policy: str = typer.Option("wang2017", "--policy", help="wang2017 | threshold | calibrated | maxboxacc (oracle upper bound)."),
    components: Optional[str] = typer.Option(
        None, "--components", help="all | largest. threshold: default all; calibrated: default tries both per class."
    ),
    tau: Optional[float] = typer.Option(None, "--tau", help="Threshold on the [0,1]-normalised map for --policy threshold (default 0.5)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Count a box without a map as a miss instead of failing."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates for the 95% CIs (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and of the calibration split."),
    sweep_size: Optional[int] = typer.Option(None, "--sweep-size", help="Run the calibrated/maxboxacc sweeps on a working grid of this longer side (an approximation; default 0 = full resolution, exact)."),
    workers: int = typer.Option(0, "--workers", help="Processes scoring maps in parallel (default 0 = all cores); results do not depend on it."),
    pointing_tolerance: float = typer.Option(0.0, "--pointing-tolerance", help="Pointing game margin in image pixels."),
    progress: bool = typer.Option(sys.stderr.isatty(), "--progress/--no-progress", help="Show a progress bar."),
    sanity: bool = typer.Option(True, "--sanity/--no-sanity", help="Add the sanity instruments (class specificity, "
                                "prior correlation, gain over prior-center/prior-lung scored on the same boxes) to summary.json."),
) -> None:
    """Score a heatmap bundle against ground-truth boxes (IoU/IoBB accuracy, pointing, mIoU, CNR, CIs).

    Example: wsl-bench score --heatmaps runs/quick/heatmaps/gradcam.npz --boxes BBox_List_2017.csv
    --labels Data_Entry_2017_v2020.csv --policy wang2017 --out scores/gradcam
    """
    from wsl_bench.heatmaps import read_bundle
    from wsl_bench.metrics import read_bbox_csv, read_labels_csv, read_probs_csv, score, write_result

    if probs is not None and labels is None:
        _fail("--probs needs --labels (the ground-truth findings per image)")
    from wsl_bench.metrics.options import score_problems
    from wsl_bench.value_checks import seed_problem, whole

    # every option checked before any file is read (one line listing each problem)
    problems = score_problems({"policy": policy, "n_boot": n_boot, "tau": tau, "components": components,
                               "sweep_size": sweep_size, "pointing_tolerance": pointing_tolerance}, "--", run=False)
    problems += [p for p in (seed_problem(seed), whole("--workers", workers, 0, 4096)) if p]
    if problems:
        _fail("; ".join(problems))
    try:
        if image_size is not None:
            from wsl_bench.images import check_pixels

            check_pixels(image_size, image_size, "--image-size")
        from wsl_bench.guards import check_out_dir

        check_out_dir(out, create=False)  # made when the scores are written
        bundle = read_bundle(heatmaps)
        box_table = read_bbox_csv(boxes)
        label_table = read_labels_csv(labels) if labels is not None else None
        prob_table = read_probs_csv(probs) if probs is not None else None
        sizes = image_size if image_size is not None else (bundle.image_sizes or 1024)
        patients = label_table["patient_id"].to_dict() if label_table is not None else None
        result = score(
            bundle,
            box_table,
            sizes,
            policy=policy,
            patients=patients,
            probs=prob_table,
            labels=label_table,
            seed=seed,
            n_boot=n_boot,
            allow_missing=allow_missing,
            tau=tau,
            components=components,
            sweep_size=sweep_size,
            workers=workers,
            pointing_tolerance=pointing_tolerance,
            progress=progress,
        )
        if sanity:
            from wsl_bench.metrics.sanity import standalone_sanity

            policy_options = {"tau": tau, "components": components, "sweep_size": sweep_size,
                              "pointing_tolerance": pointing_tolerance, "workers": workers}
            result.summary["sanity"] = standalone_sanity(bundle, result, box_table, sizes, policy=policy,
                                                         patients=patients, seed=seed, n_boot=n_boot,
                                                         **{k: v for k, v in policy_options.items() if v is not None})
        write_result(result, out)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        _fail(str(exc).strip("'\""))
    except OSError as exc:
        _fail(f"cannot read or write {exc.filename or out}: {exc.strerror or exc}")
    s = result.summary
    macro = s["iou_acc"]["macro"]
    console.print(
        f"scored {s['n_boxes']} boxes on {s['n_images']} images with policy {policy}: "
        f"macro IoU-acc@0.1 {_fmt(macro.get('0.1'))}, @0.3 {_fmt(macro.get('0.3'))}, @0.5 {_fmt(macro.get('0.5'))}",
        highlight=False,
    )
    if s["n_missing"]:
        console.print(f"{s['n_missing']} map(s) missing, counted as misses (--allow-missing)", highlight=False)
    if s["n_maps_without_boxes"]:
        console.print(f"{s['n_maps_without_boxes']} map(s) have no ground-truth box (not scored)", highlight=False)
    console.print(f"wrote {out / 'per_box.csv'} and {out / 'summary.json'}", highlight=False)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def register(app: typer.Typer) -> None:
    """Add `score` and `floors` to the `wsl-bench` app."""
    from wsl_bench.metrics import floors

    app.command("score")(score_command)
    floors.register(app)
