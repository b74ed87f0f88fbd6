"""index.html in headless Chromium: renders with no console errors, every image loads, tables sort,
the gallery filters; a screenshot is saved for a human to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_report_helpers import fake_report, make_fake_run  # noqa: F401 - fake_report is a fixture

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
    assert check.n_tables == html.count('<table class="sortable"') == 9 and check.sorted_ok
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


def test_the_label_mapping_section_of_an_external_run_is_in_index_html(tmp_path):
    """An external-validation run's mapping (data/label_mapping.csv) is shown in index.html as in report.md:
    before the sanity section, its rows in a sortable table, the unused findings listed, the CSV linked."""
    from wsl_bench.report import write_report

    run = make_fake_run(tmp_path / "run", n_images=8, methods={"good": 0.0, "random": None})
    rows = [{"dataset": "rsna-pneumonia", "finding": "Lung Opacity", "suite": "Pneumonia", "localized": "True"},
            {"dataset": "rsna-pneumonia", "finding": "Shadow", "suite": "", "localized": "False"}]
    pd.DataFrame(rows).to_csv(run / "data" / "label_mapping.csv", index=False)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "synth"}, "test_data": {"name": "rsna-pneumonia"}}))
    out = tmp_path / "report"
    write_report([run], out, n_boot=20)
    html = (out / "index.html").read_text()
    section = html.split('<section id="label-mapping">')[1].split("</section>")[0]
    assert html.index('<section id="label-mapping">') < html.index('<section id="sanity">')
    assert '<a href="#label-mapping">Label mapping (external validation)</a>' in html
    assert "<h2>Label mapping (external validation)</h2>" in section
    assert "trained on <code>synth</code>, scored on the test split of <code>rsna-pneumonia</code>" in section
    cells = [["rsna-pneumonia", "Lung Opacity", "Pneumonia", "yes"], ["rsna-pneumonia", "Shadow", "(not used)", "no"]]
    for row in cells:
        assert "".join(f'<td class="key" data-v="{c}">{c}</td>' for c in row) in section
    assert "Not used (no suite finding): rsna-pneumonia: Shadow." in section
    assert '<a href="tables/label_mapping.csv">CSV</a>' in section and (out / "tables" / "label_mapping.csv").is_file()
    assert "## Label mapping (external validation)" in (out / "report.md").read_text()
    check = check_page(out / "index.html")
    assert check.console_errors == [] and check.broken_images == []
    assert check.n_tables == html.count('<table class="sortable"') and check.sorted_ok
