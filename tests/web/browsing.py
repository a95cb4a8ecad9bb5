"""Driving the page in the browser: finding elements, and submitting a form."""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

Browser = Any  # selenium's WebDriver


def css(browser: Browser, selector: str) -> list[Any]:
    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def one(browser: Browser, selector: str) -> Any:
    found = css(browser, selector)
    assert len(found) == 1, f"{selector}: {len(found)} elements"
    return found[0]


def _gone(element: Any) -> bool:
    try:
        element.is_enabled()
    except WebDriverException:  # stale; or, mid-navigation, chromedriver's "node does
        return True             # not belong to the document", which is no StaleElement...
    return False


def click_and_wait(browser: Browser, button: Any, timeout_s: float = 30) -> None:
    """Click a submit button; wait until the answer's page has replaced this one."""
    old = browser.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(browser, timeout_s).until(lambda b: _gone(old))
    WebDriverWait(browser, timeout_s).until(
        lambda b: b.execute_script("return document.readyState") == "complete")
