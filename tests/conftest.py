import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from factory import write_cohort  # noqa: E402


@pytest.fixture
def tiny_cohort_2d(tmp_path):
    return write_cohort(tmp_path / "cohort2d", dims=2)


@pytest.fixture
def tiny_cohort_3d(tmp_path):
    return write_cohort(tmp_path / "cohort3d", dims=3)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine run far faster on one thread than on two (spinning threads
    wait for a core another process holds). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; set before their module-scoped runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the headless browser -----------------------------------------------------------------------------

REQUIRE_BROWSER = "ONCODIFF_REQUIRE_BROWSER"  # set (to anything but "" or "0") by .ci/run: no browser is a failure
BROWSER_WINDOW = (1400, 1000)


def browser_missing() -> str | None:
    """Why the headless browser cannot run here (chromium, chromedriver or selenium missing), or None."""
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        return "no chromium on PATH (Debian: apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def require_browser() -> None:
    """Skip the test, saying why, where the browser is missing; fail instead when ONCODIFF_REQUIRE_BROWSER is set
    (CI: a browser test that silently skipped would prove nothing)."""
    why = browser_missing()
    if why is None:
        return
    if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE_BROWSER} is set, but the browser tests cannot run: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser():
    """One headless Debian chromium for the session, driven by selenium through the system chromedriver (nothing
    is downloaded), WebGL2 by SwiftShader, in a 1400 x 1000 window. Every test that needs a browser uses this
    fixture: it skips where chromium, chromedriver or selenium is missing, and fails there under
    ONCODIFF_REQUIRE_BROWSER=1 (set by .ci/run)."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                 f"--window-size={BROWSER_WINDOW[0]},{BROWSER_WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()
