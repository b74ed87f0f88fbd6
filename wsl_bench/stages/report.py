"""The report stage: report/ from the score tables by the reports package, or a basic report.md of its own.

A failed full report does not lose the run: the basic report is written, the error is logged, and the stage
is left not-done so the next `wsl-bench run` on the folder tries the full report again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from wsl_bench.config import config_hash
from wsl_bench.io import sha256_file, write_text
from wsl_bench.labels import BOX_FINDINGS
from wsl_bench.stages.base import RunFolder, is_rank_zero


def report_stage(run: RunFolder, key: str) -> Path:
    """report/ via `wsl_bench.report.write_report`; if that fails (or `report.full` is off), a basic report.md."""
    out = run.dir / "report"
    t0 = time.perf_counter()
    write_report, error = None, "report.full is off"
    if run.config.get("report", {}).get("full", True):
        try:
            from wsl_bench.report import write_report
        except ImportError as exc:
            error = exc
    if write_report is not None:
        try:
            path = Path(write_report([run.dir], out))
        except Exception as exc:  # noqa: BLE001 - keep the scores and say what broke
            error = exc
        else:  # the full report lists the run's failed methods in its notes (wsl_bench/report/writer.py)
            run.mark_done("report", key, {f"report/{path.name}": sha256_file(path)}, report_s=round(time.perf_counter() - t0, 3))
            return path
    path = out / "report.md"
    write_text(path, basic_report_md(run))
    if isinstance(error, str):  # asked for the basic report: the stage is done
        run.mark_done("report", key, {f"report/{path.name}": sha256_file(path)}, report_s=round(time.perf_counter() - t0, 3))
    else:
        run.log(f"warning: the full report failed ({type(error).__name__}: {error}); wrote a basic {path}")
    return path


def failures_md(run: RunFolder) -> str:
    """A markdown section listing the methods that failed in this run (empty when none did)."""
    failures = run.manifest.get("failures") or {}
    if not failures:
        return ""
    lines = ["## Failed methods", "", "These methods have no scores in this report; re-run the same command "
             "after fixing the cause to finish them.", "", "| method | stage | error |", "|---|---|---|"]
    for m, f in failures.items():
        error = str(f.get("error", "")).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {m} | {f.get('stage', '?')} | {error} |")
    return "\n".join(lines) + "\n"


def basic_report_md(run: RunFolder, threshold: str = "0.3") -> str:
    """Per-class and macro IoU accuracy of every scored method, then any failures (no reports package)."""
    rows = []
    for name in run.config["methods_order"]:
        path = run.dir / "scores" / name / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        acc = summary.get("iou_acc", {})
        rows.append([name] + [acc.get(lab, {}).get(threshold) for lab in (*BOX_FINDINGS, "macro")])
    header = "| method | " + " | ".join((*BOX_FINDINGS, "macro")) + " |"
    lines = [f"# wsl-bench run `{run.dir.name}`", "", f"IoU accuracy at T(IoU) = {threshold}, policy "
             f"`{run.config['score']['policy']}`.", "", header, "|" + "---|" * (len(BOX_FINDINGS) + 2)]
    for r in rows:
        lines.append("| " + " | ".join([r[0]] + ["–" if v is None else f"{float(v):.3f}" for v in r[1:]]) + " |")
    failed = failures_md(run)
    return "\n".join(lines) + "\n" + ("\n" + failed if failed else "")


class ReportStage:
    """report.md (and index.html, tables/, figures/) over every method scored in this invocation."""

    name = title = "report"
    per_method = False

    def path(self, run: RunFolder) -> Path:
        return run.dir / "report" / "report.md"

    def key(self, run: RunFolder, method: str | None, upstream: dict[str, str]) -> str:
        failures = run.manifest.get("failures") or {}
        order = run.config["methods_order"]
        scores = [config_hash({"key": upstream[f"score/{m}"], "files": run.files_digest(f"score/{m}")})
                  for m in order if m not in failures and f"score/{m}" in upstream]
        return config_hash({"scores": scores, "order": order, "report": run.config.get("report"), "failures": failures})

    def inputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return tuple(f"score/{m}" for m in run.config["methods_order"])

    def outputs(self, run: RunFolder, method: str | None) -> tuple[str, ...]:
        return ("report",)

    def takes_part(self, run: RunFolder, method: str | None) -> bool:
        return is_rank_zero()

    def run(self, run: RunFolder, cohort, method: str | None, key: str) -> Path:
        run.log("report")
        return report_stage(run, key)


REPORT = ReportStage()
