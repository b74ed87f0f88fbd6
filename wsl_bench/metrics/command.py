"""Sub-commands of this stage (placeholder until the stage lands)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `wsl-bench` app."""
