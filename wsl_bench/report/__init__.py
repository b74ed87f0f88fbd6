"""The report stage: paper-ready tables, figures, an HTML viewer and report.md from run folders.

Everything is read from the run folders' score tables (``scores/<method>/per_box.csv`` and
``summary.json``); nothing is rescored here.
"""

from wsl_bench.report.runs import ReportInputError, RunSet, load_runs
from wsl_bench.report.writer import write_report

__all__ = ["ReportInputError", "RunSet", "load_runs", "write_report"]
