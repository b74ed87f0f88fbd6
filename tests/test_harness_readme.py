"""The README's two commands are what CI and users run: keep them exact."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    after = readme.split("<!-- test-command:", 1)[1]
    test_cmd = _bash_blocks(after)[0]
    ci_lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l and not l.startswith("#")]
    assert ci_lines[-1] == test_cmd
    assert test_cmd.endswith("pip install -e \".[test]\" && pytest")


def test_readme_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("## ", 1)[0]
    blocks = _bash_blocks(quick)
    assert len(blocks) == 2 and all("\n" not in b for b in blocks)
    assert blocks[0].endswith("pip install -e . && wsl-bench run")
    assert blocks[0].startswith("python3 -m venv .venv && . .venv/bin/activate")


def test_every_command_in_the_readme_exists():
    from typer.testing import CliRunner

    from wsl_bench.cli import app

    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"^wsl-bench (\w+)", readme, flags=re.M))
    for cmd in used:
        result = CliRunner().invoke(app, [cmd, "--help"])
        assert result.exit_code == 0, f"README uses `wsl-bench {cmd}`, which does not exist"
