"""The `wsl-bench` command. Each stage's home adds its own sub-commands through `register(app)`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="wsl-bench",
    help=(
        "Weakly-supervised localization benchmark for chest X-rays.\n\n"
        "Example: wsl-bench run --methods clarity,gradcam"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Where each group of sub-commands lives (one home per stage, see ../shared/design.md).
COMMAND_MODULES = (
    "wsl_bench.commands",  # run, explain, methods
    "wsl_bench.data.commands",  # synth ..., datasets ...
    "wsl_bench.metrics.command",  # score
    "wsl_bench.report.command",  # report
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
