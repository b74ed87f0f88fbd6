"""Harness sub-commands: `run` (the benchmark), `explain` (one image), `methods` (what is registered)."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from wsl_bench.presets import DEFAULT_METHODS
from wsl_bench.references import CEILING_REFERENCES, GUESS_REFERENCES

console = Console(stderr=True, soft_wrap=True)  # never break a message (or a path) across lines


def _fail(msg: str, code: int = 2) -> None:
    """One clear line for a user mistake; WSL_BENCH_DEBUG=1 shows the traceback instead."""
    import os

    if os.environ.get("WSL_BENCH_DEBUG"):
        raise
    console.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def given_argv(ctx: typer.Context) -> list[str]:
    """The command line as the user gave it: `wsl-bench <command>` and every option set on it (defaults left
    out), in the command's option order. The run records it in manifest.json; the report quotes it."""
    argv = ["wsl-bench", ctx.info_name or ""]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)  # typer's own click: compared by name, not by class
        if getattr(param, "param_type_name", "") != "option" or getattr(source, "name", "") not in (
                "COMMANDLINE", "ENVIRONMENT"):
            continue
        value = ctx.params.get(param.name)
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if param.is_flag:
            if value:
                argv.append(flag)
            elif param.secondary_opts:
                argv.append(next((o for o in param.secondary_opts if o.startswith("--")), param.secondary_opts[0]))
        elif param.multiple:
            for v in value or ():
                argv += [flag, str(v)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def run_command(
    ctx: typer.Context,
    methods: Optional[str] = typer.Option(
        None, "--methods", "-m", help=f"Comma-separated methods (default: {','.join(DEFAULT_METHODS)}). The references "
        f"{', '.join(GUESS_REFERENCES)} are always added, {', '.join(CEILING_REFERENCES)} on data with exact lesion masks."
    ),
    data: Optional[str] = typer.Option(None, "--data", help="A registered dataset: synth (SynthCXR, generated locally), "
                                       "nih (ChestX-ray14 on disk), ...; `wsl-bench datasets list` shows them all."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder for --data (every dataset but synth needs one)."),
    test_data: Optional[str] = typer.Option(
        None, "--test-data", help="External validation: train on --data's train/val splits, then explain and score on "
        "the test split of this registered dataset (the report gives its label mapping)."),
    test_root: Optional[Path] = typer.Option(None, "--test-root", help="Dataset folder for --test-data."),
    preset: str = typer.Option("quick", "--preset", help="quick (SynthCXR 128 px, a few epochs, CPU minutes), standard (SynthCXR 224 px, trained to early "
                          "stopping; CPU hours or a GPU), paper (NIH, GPUs) or tiny (smoke test)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<preset>). Re-running resumes it."),
    seed: int = typer.Option(0, "--seed", help="One seed for data, splits, init and sampling."),
    accelerator: str = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu."),
    devices: str = typer.Option("1", "--devices", help="Devices per node (Lightning), e.g. 1, 8 or auto."),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Nodes for multi-node DDP."),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, ..."),
    fit_jobs: Optional[str] = typer.Option(
        None, "--fit-jobs", help="Fits to run at once, each in its own process with cores/N torch threads: a count, "
        "or auto (one per CPU core; 1 on a GPU). Default 1: on a 2-core machine two fits side by side took as long "
        "as one after the other (docs/harness.md)."),
    ablate: Optional[str] = typer.Option(None, "--ablate", help="Comma-separated components; adds '<method>-no-<component>' variants."),
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", help="Config override SECTION.KEY=VALUE (repeatable), e.g. --set data.n_train=200 "
        "--set fit.max_epochs=2 --set methods.gradcam.lr=0.01 --set score.n_boot=200."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (stages, data size, estimates) and exit."),
    progress: bool = typer.Option(sys.stderr.isatty(), "--progress/--no-progress", help="Training progress bars."),
) -> None:
    """Train, explain, score and report methods into one resumable run folder.

    Stages: data -> fit -> explain -> score -> report. A stage whose inputs and config are unchanged is
    skipped; kill the run at any time and the same command finishes it.

    Example: wsl-bench run --methods clarity,gradcam --preset quick --out runs/quick

    External validation (train on NIH, score on RSNA's test split): wsl-bench run --methods gradcam --data nih --root NIH --test-data rsna-pneumonia --test-root RSNA
    """
    from wsl_bench.run import MethodsFailed, RunError, build_config, dry_run_text, execute, parse_overrides

    dev: int | str = int(devices) if devices.isdigit() else devices
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = build_config(
                _split(methods) or None,
                data=data,
                root=str(root) if root else None,
                preset=preset,
                seed=seed,
                ablate=_split(ablate),
                overrides=parse_overrides(overrides),
                hardware={"accelerator": accelerator, "devices": dev, "num_nodes": num_nodes, "strategy": strategy,
                          "fit_jobs": int(fit_jobs) if fit_jobs and fit_jobs.strip().isdigit() else fit_jobs},
                test_data=test_data,
                test_root=str(test_root) if test_root else None,
            )
        for w in caught:
            if "not registered yet" in str(w.message):
                console.print(f"[yellow]warning:[/] {w.message}")
        cfg["progress"] = progress
        folder = out or Path("runs") / preset
        if dry_run:
            typer.echo(dry_run_text(cfg, folder))
            return
        from wsl_bench.guards import check_out_dir

        check_out_dir(folder)
        report = execute(cfg, folder, log=lambda m: console.print(f"[cyan]wsl-bench[/] {m}", highlight=False),
                         command=given_argv(ctx))
    except MethodsFailed as exc:  # the others are scored: show them, then fail with the list
        _print_summary(folder, cfg)
        console.print(f"report: {exc.report}")
        _fail(str(exc), code=1)
    except (RunError, KeyError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    except OSError as exc:  # a folder that vanished or filled up mid-run: say which file
        _fail(f"cannot write {exc.filename or folder}: {exc.strerror or exc}")
    if report is not None:
        _print_summary(folder, cfg)
        console.print(f"report: {report}")


def _print_summary(folder: Path, cfg: dict) -> None:
    import json

    table = Table(title=f"macro IoU accuracy ({cfg['score']['policy']})")
    table.add_column("method")
    for t in ("0.1", "0.3", "0.5"):
        table.add_column(f"T(IoU)={t}", justify="right")
    for m in cfg["methods_order"]:
        path = folder / "scores" / m / "summary.json"
        if not path.exists():
            continue
        macro = json.loads(path.read_text()).get("iou_acc", {}).get("macro", {})
        table.add_row(m, *[f"{macro[t]:.3f}" if isinstance(macro.get(t), (int, float)) else "–" for t in ("0.1", "0.3", "0.5")])
    console.print(table)


def explain_command(
    image: Path = typer.Argument(..., help="A chest X-ray (PNG/JPEG, any size; colour is converted to grey)."),
    run: Path = typer.Option(..., "--run", help="A finished run folder (it holds the trained method)."),
    method: str = typer.Option(..., "--method", help="A method of that run, e.g. gradcam."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output PNG (default: <image>.<method>.png)."),
    tau: float = typer.Option(0.5, "--tau", help="Box threshold on the min-max normalised map (largest component)."),
) -> None:
    """Draw one image's heatmaps and boxes for the 8 box findings with a trained method.

    Example: wsl-bench explain --run runs/quick --method gradcam chest.png --out chest.gradcam.png
    """
    try:
        if not (math.isfinite(tau) and 0.0 <= tau < 1.0):
            raise ValueError(f"--tau {tau} must be a number in [0, 1)")
        path = explain_image(run, method, image, out or image.with_name(f"{image.stem}.{method}.png"), tau=tau)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
    except OSError as exc:
        _fail(f"cannot read or write {exc.filename or ''}: {exc.strerror or exc}")
    console.print(f"wrote {path}")


def explain_image(run_dir: Path, method_name: str, image_path: Path, out: Path, tau: float = 0.5) -> Path:
    """Load `method_name` from `run_dir`, explain one image file, and save a panel per box finding."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    import yaml
    from matplotlib.patches import Rectangle
    from PIL import Image

    from wsl_bench.guards import check_out_file, sanitize_manifest
    from wsl_bench.images import check_not_saturated, read_grey
    from wsl_bench.io import atomic_path
    from wsl_bench.labels import BOX_FINDING_INDICES, BOX_FINDINGS
    from wsl_bench.localize import prepare, threshold
    from wsl_bench.methods import create_method

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing; is {run_dir} a wsl-bench run folder? Make one with `wsl-bench run`")
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
        methods = cfg["methods"]
        spec = methods.get(method_name) if isinstance(methods, dict) else None
        size = int(cfg["data"]["image_size"])
        if spec is not None:
            registry, config = str(spec["registry"]), dict(spec["config"])
    except (yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cfg_path} is not a wsl-bench run config ({type(exc).__name__}: {exc}); "
                         "re-run `wsl-bench run` into that folder") from None
    if spec is None:
        raise ValueError(f"method {method_name!r} is not part of run {run_dir}; it has: {', '.join(map(str, methods))}")
    if not 8 <= size <= 4096:
        raise ValueError(f"{cfg_path}: data.image_size={size} is not a model size wsl-bench makes (8..4096)")
    manifest: dict = {}
    if (run_dir / "manifest.json").exists():
        try:
            manifest = sanitize_manifest(json.loads((run_dir / "manifest.json").read_text()), run_dir / "manifest.json",
                                         log=lambda m: None)
        except (ValueError, UnicodeDecodeError):
            manifest = {}
    if not manifest.get("stages", {}).get(f"fit/{method_name}", {}).get("done"):
        raise ValueError(f"{method_name} has not finished training in {run_dir}; finish the run with `wsl-bench run --out {run_dir}`")
    check_out_file(out)
    # the suite's one image reader: header checked against the pixel limit before decoding, 16-bit scaled
    grey8 = check_not_saturated(read_grey(image_path), image_path)
    ckdir = run_dir / "checkpoints" / method_name
    try:
        method = create_method(registry, config)
        method.name = method_name
        method.load(ckdir)
    except KeyError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint or config: one line, and the fix
        first = (str(exc).strip().splitlines() or ["(no message)"])[0]
        raise ValueError(f"cannot load {method_name} from {ckdir} ({type(exc).__name__}: {first}); re-run "
                         f"`wsl-bench run --out {run_dir}` with the same options: it redoes a damaged fit") from None
    x = torch.nn.functional.interpolate(torch.tensor(grey8, dtype=torch.float32)[None, None] / 255.0, size=(size, size), mode="area")
    probs = method.predict(x).detach().float()[0].numpy()
    maps = method.explain(x, list(BOX_FINDING_INDICES)).detach().float()[0].numpy()
    # drawn at most 1024 px a side (the panels are ~300 px): memory stays small for any accepted image
    h0, w0 = grey8.shape
    scale = min(1.0, 1024 / max(h0, w0))
    h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    shown = grey8 if scale == 1.0 else np.asarray(Image.fromarray(grey8).resize((w, h), Image.BILINEAR))
    grey = shown.astype(np.float32) / 255.0
    policy = threshold(tau, "largest")
    h, w = grey.shape
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.6))
    for ax, label, ci, m in zip(axes.flat, BOX_FINDINGS, BOX_FINDING_INDICES, maps):
        norm, informative = prepare(m, (h, w))
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        ax.imshow(norm, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        for x0, y0, x1, y1 in policy.candidates(norm, informative).boxes:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
        ax.set_title(f"{label}  p={probs[ci]:.2f}")
        ax.axis("off")
    fig.suptitle(f"{method_name} on {Path(image_path).name} (boxes: largest component above tau={tau})")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(out)


def methods_command() -> None:
    """List every registered method with a one-line description and its paper.

    Example: wsl-bench methods
    """
    from wsl_bench.methods import available_methods, load_entry_points

    methods = available_methods()
    table = Table(title=f"{len(methods)} registered methods")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("paper")
    for name, info in methods.items():
        table.add_row(name, info.description, info.paper or "")
    Console().print(table)
    for err in load_entry_points(force=False) or []:
        console.print(f"[yellow]warning:[/] {err}")


def register(app: typer.Typer) -> None:
    """Add `run`, `explain` and `methods` to the `wsl-bench` app."""
    app.command("run")(run_command)
    app.command("explain")(explain_command)
    app.command("methods")(methods_command)
