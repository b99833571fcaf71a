"""The shared `browser` fixture (conftest.py): where chromium is missing, a browser test skips and says why on a
newcomer's machine, and fails under ONCODIFF_REQUIRE_BROWSER=1, which .ci/run sets, so CI proves the tests ran."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REQUIRE_BROWSER, require_browser


@pytest.fixture
def no_chromium(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)


def test_without_chromium_a_browser_test_is_skipped_saying_why(no_chromium, monkeypatch):
    monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium on PATH"):
        require_browser()
    monkeypatch.setenv(REQUIRE_BROWSER, "0")
    with pytest.raises(pytest.skip.Exception):
        require_browser()


def test_without_chromium_a_browser_test_fails_where_ci_requires_it(no_chromium, monkeypatch):
    monkeypatch.setenv(REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_BROWSER} is set, but .*no chromium on PATH"):
        require_browser()


def test_ci_requires_the_browser_tests():
    run = (Path(__file__).parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert f"export {REQUIRE_BROWSER}=1" in run


def test_every_browser_test_uses_the_shared_fixture():
    """No test module starts its own chromium (a second one would miss the skip, as the report test once did)."""
    for path in Path(__file__).parent.glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        assert "webdriver.Chrome(" not in text and "def browser(" not in text, path.name
