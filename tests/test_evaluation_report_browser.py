"""The evaluation report in headless chromium at a 1400-px-wide window: no table runs past the page (the per-case
tables wrap their long cells). The `browser` fixture (conftest.py) skips it, saying why, where chromium or its driver
is missing, and fails it there under ONCODIFF_REQUIRE_BROWSER=1 (.ci/run)."""

from __future__ import annotations

import json

from test_evaluation_report import write_evaluation
from oncodiff.evaluation import write_report

LONG_NOTE = "baseline 225 mm², follow-up 322 mm²; response rule: change <= -20%; " * 2


def test_no_report_table_is_wider_than_a_1400_px_window(browser, tmp_path):
    evaluation, _ = write_evaluation(tmp_path)
    summary = json.loads((evaluation / "summary.json").read_text(encoding="utf-8"))
    for rows in summary["per_case_size"].values():  # the widest cells a real run writes
        for row in rows:
            row |= {"change_pct_interval_90_calibrated": [-182.8, +150.2], "note": LONG_NOTE}
    (evaluation / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    browser.get(write_report(evaluation).as_uri())
    assert browser.execute_script("return window.innerWidth") == 1400
    overflowing = browser.execute_script(
        "return [...document.querySelectorAll('div.scroll')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.slice(0, 60))")
    assert browser.execute_script("return document.querySelectorAll('div.scroll.cases').length") >= 1
    assert overflowing == []
