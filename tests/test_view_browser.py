"""``oncodiff view`` in a real browser: Debian's headless chromium driven by selenium through the system
chromedriver (nothing is downloaded), WebGL2 by SwiftShader. On a tiny trained 3D run it loads the page,
scrolls the volume, runs a what-if, and checks that the canvases changed and the numbers appeared.

Set ONCODIFF_VIEWER_SCREENSHOT=PATH to keep the final screenshot (docs/images/viewer.png is one)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from test_view_http import free_port, train_and_predict

try:  # the `browser` fixture (conftest.py) skips, saying why, or fails under ONCODIFF_REQUIRE_BROWSER, without them
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    pass

# the session's browser comes first, so that a machine without one skips before training the run
pytestmark = pytest.mark.usefixtures("browser", "one_torch_thread")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The viewer on a tiny 3D run, served by uvicorn on a free loopback port in a thread; yields its tokened
    address, as `oncodiff view` prints it (the page's own requests then carry the cookie it sets)."""
    import uvicorn

    from oncodiff.view import ViewerFolders, create_app
    from oncodiff.view.guard import new_token

    trained = train_and_predict(tmp_path_factory.mktemp("view3d"), dims=3)
    folders = ViewerFolders.choose(trained["run"], predictions=trained["predictions"], data_cache=trained["data_cache"])
    port = free_port()
    token = new_token()
    app = create_app(folders, token=token, port=port)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/?token={token}"
    uv.should_exit = True
    thread.join(timeout=10)


def wait_for_state(driver, *states: str, timeout: float = 120) -> str:
    WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in states)
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def canvas_png(driver, side: str) -> bytes:
    time.sleep(0.5)  # NiiVue draws on the next animation frame
    return driver.find_element(By.ID, f"nv-{side}").screenshot_as_png


def messages(driver) -> str:
    return driver.find_element(By.ID, "messages").text


def test_load_scroll_and_ask_a_what_if_in_chromium(server, browser, tmp_path):
    browser.get(server)
    assert wait_for_state(browser, "ready", "error") == "ready", messages(browser)
    assert messages(browser) == ""
    rows = browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-key]")
    assert len(rows) == 2 and "%" in rows[0].text
    assert "3D, 24 × 20 × 10 voxels of 1 × 0.8 × 2 mm, axes RAS" in browser.find_element(By.ID, "geometry").text
    assert "WebGL2" not in messages(browser)
    timeline = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert timeline == ["day 0 · pre · baseline (input)", "day 42 · week6 · true follow-up",
                        "day 42 · week6 · predicted"]

    before = canvas_png(browser, "left")
    slider = browser.find_element(By.ID, "slice")
    position = slider.get_attribute("value")
    canvas = browser.find_element(By.ID, "nv-left")
    for _ in range(3):  # the mouse wheel over a slice moves through the volume
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, 120).perform()
        time.sleep(0.2)
    assert slider.get_attribute("value") != position
    assert canvas_png(browser, "left") != before

    right_before = canvas_png(browser, "right")
    Select(browser.find_element(By.ID, "whatif-response")).select_by_value("non-responder")
    days = browser.find_element(By.ID, "whatif-days")
    days.clear()
    days.send_keys("60")
    browser.find_element(By.ID, "whatif-run").click()
    assert wait_for_state(browser, "whatif-done", "whatif-error", timeout=300) == "whatif-done", \
        browser.find_element(By.ID, "whatif-status").text
    table = browser.find_element(By.ID, "whatif-table").text
    assert "volume change" in table and "%" in table and "response=non-responder" in table
    assert len(browser.find_elements(By.CSS_SELECTOR, "#curve circle")) == 6
    assert "is predicted from: pre (day 0)" in browser.find_element(By.ID, "whatif-inputs").text
    assert Select(browser.find_element(By.ID, "right-layer")).first_selected_option.text == "what-if mean"
    assert canvas_png(browser, "right") != right_before
    assert messages(browser) == ""

    Select(browser.find_element(By.ID, "view")).select_by_visible_text("all three")
    Select(browser.find_element(By.ID, "overlay")).select_by_value("drift")
    wait_for_state(browser, "ready")
    shot = Path(os.environ.get("ONCODIFF_VIEWER_SCREENSHOT") or tmp_path / "viewer.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_an_invalid_what_if_shows_its_message_in_the_page(server, browser):
    browser.get(server)
    assert wait_for_state(browser, "ready", "error") == "ready", messages(browser)
    age = browser.find_element(By.CSS_SELECTOR, "input.clinical[data-variable=age]")
    age.clear()
    age.send_keys("-5")
    browser.find_element(By.ID, "whatif-run").click()
    assert wait_for_state(browser, "whatif-error") == "whatif-error"
    assert "clinical.age=-5: outside what the model can answer for" in browser.find_element(By.ID, "whatif-status").text
