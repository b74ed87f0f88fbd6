"""The errors a run reports to its user: a problem with the run itself, or methods that failed in it."""

from __future__ import annotations

from pathlib import Path


class RunError(RuntimeError):
    """A user-facing problem with a run (bad option, busy folder, missing data); the message says the fix."""


class MethodsFailed(RunError):
    """Some methods failed in fit, explain or score; the others finished and the report was written.

    `failures` maps method -> {"stage", "error"} (also in manifest.json and the report); `report` is the
    report path. Re-running the same command retries only the failed methods' stages.
    """

    def __init__(self, failures: dict[str, dict[str, str]], report: Path | None, n_methods: int | None = None):
        self.failures, self.report = failures, report
        lines = "; ".join(f"{m} ({f['stage']}: {f['error']})" for m, f in failures.items())
        others = ("No method was scored; the report lists the failures" if n_methods is not None
                  and len(failures) >= n_methods else "The other methods were scored and reported")
        super().__init__(
            f"{len(failures)} method(s) failed: {lines}. {others}; "
            "fix the cause and re-run the same command to finish the failed ones (WSL_BENCH_DEBUG=1 re-raises "
            "the first failure with its traceback)"
        )
