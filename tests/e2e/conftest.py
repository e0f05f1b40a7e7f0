"""What more than one end-to-end module needs: a real headless Chromium (Debian's, driven by its chromedriver through
Selenium) for the console's browser tests."""

import os
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver


def browser_binaries() -> tuple[str, str]:
    chromium = os.environ.get("LETHE_TEST_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("LETHE_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver; "
            "`make setup` installs them), or set LETHE_TEST_CHROMIUM and LETHE_TEST_CHROMEDRIVER",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.implicitly_wait(2)
    yield driver
    driver.quit()
