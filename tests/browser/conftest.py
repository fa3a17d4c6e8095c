"""A real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium.

No browser is downloaded: the driver is /usr/bin/chromedriver and Selenium Manager stays
offline. Each test gets a fresh profile directory; page JavaScript is switched off, because the
pages must work without it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GATEWAY_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


def _options(user_data_dir: str, *, javascript: bool, mobile: bool) -> Any:
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    if mobile:
        options.add_experimental_option(
            "mobileEmulation", {"deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 2.0}}
        )
    return options


@pytest.fixture
def browser() -> Iterator[Callable[..., Any]]:
    """browser(javascript=False, mobile=False) -> a selenium webdriver on a fresh profile."""
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium"
    assert os.path.exists(CHROMEDRIVER), f"{CHROMEDRIVER} missing: apt-get install chromium-driver"
    started: list[tuple[Any, str]] = []

    def start(*, javascript: bool = False, mobile: bool = False) -> Any:
        profile = tempfile.mkdtemp(prefix="gw-chromium-")
        driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER),
            options=_options(profile, javascript=javascript, mobile=mobile),
        )
        driver.set_page_load_timeout(30)
        started.append((driver, profile))
        return driver

    yield start
    for driver, profile in started:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
