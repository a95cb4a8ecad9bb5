"""A small reservoir in a real store, the keeper's page serving it, and one headless
Chromium per test module (Debian's chromium with its chromedriver, on 127.0.0.1)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from edge.web.pin import hash_pin
from tests.web.keeper import LoopThread, StoreKeeper
from tests.web.sample import CHROMEDRIVER, CHROMIUM, PIN, Facts, build_site


@pytest.fixture(scope="session")
def pin_hash() -> str:
    return hash_pin(PIN)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreKeeper, Facts]]:
    keeper, facts = build_site(tmp_path_factory.mktemp("store") / "edge.db")
    yield keeper, facts
    keeper.close()


def _require_browser() -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are not installed: run scripts/test, "
                    "which installs them (apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module, reused by its tests."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="keeper-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--no-first-run",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                     "--window-size=412,900", "--force-device-scale-factor=1",
                     "--lang=zh-CN"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
