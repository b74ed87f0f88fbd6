"""index.html in headless Chromium: renders with no console errors, every image loads, tables sort,
the gallery filters; a screenshot is saved for a human to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_report_helpers import fake_report  # noqa: F401 - fixture

from wsl_bench.report.browser import check_page, find_chromium

# Skipped on a developer machine without Chromium; .ci/run installs it and sets WSL_BENCH_REQUIRE_CHROMIUM=1.
pytestmark = pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("WSL_BENCH_REQUIRE_CHROMIUM"),
    reason="Chromium missing (apt-get update && apt-get install -y chromium)",
)


def test_index_html_renders_cleanly_in_chromium(fake_report, tmp_path):
    _, out = fake_report
    shot = Path(os.environ.get("WSL_BENCH_SCREENSHOT_DIR", tmp_path)) / "report_screenshot.png"
    check = check_page(out / "index.html", screenshot=shot, full_page=True)
    assert check.console_errors == []
    assert check.broken_images == []
    html = (out / "index.html").read_text()
    assert len(check.images) == html.count("<img ")
    srcs = {i["src"] for i in check.images}
    assert {f"figures/{p.name}" for p in (out / "figures").glob("*.png")} <= srcs
    assert {p.relative_to(out).as_posix() for p in (out / "gallery").rglob("*.jpg")} == {s for s in srcs if s.startswith("gallery/")}
    assert check.n_tables == html.count('<table class="sortable"') == 8 and check.sorted_ok
    assert check.filter["consistent"] and 0 < check.filter["shown"] < check.filter["total"]
    assert check.rows_filter["consistent"] and 0 < check.rows_filter["shown"] < check.rows_filter["total"]
    assert check.screenshot.stat().st_size > 10_000


def test_a_broken_page_is_caught(fake_report, tmp_path):
    _, out = fake_report
    copy = tmp_path / "broken"
    shutil.copytree(out, copy)
    html = (copy / "index.html").read_text()
    (copy / "index.html").write_text(html.replace("</body>", "<script>console.error('boom'); nope();</script></body>"))
    next(copy.glob("figures/*.png")).unlink()
    check = check_page(copy / "index.html")
    assert not check.ok
    assert any("boom" in e for e in check.console_errors)
    assert any("nope is not defined" in e for e in check.console_errors)
    assert len(check.broken_images) == 1
