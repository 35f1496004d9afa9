"""Debian's headless Chromium, driven by Selenium, logged into Airflow's UI as a person would:
for the browser tests and ``bench/view.py``."""

from __future__ import annotations

import contextlib
import shutil


class NoBrowser(RuntimeError):
    """Debian's chromium or chromium-driver is not installed."""


def require() -> tuple[str, str]:
    """The paths of ``chromium`` and ``chromedriver``; ``NoBrowser`` when either is missing."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise NoBrowser(
            "the browser tests need Debian's chromium and chromium-driver "
            "(`apt-get install chromium chromium-driver`; .ci/run and make test install them)"
        )
    return binary, driver


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 2400):
    """A headless Chromium (``chromium`` and ``chromium-driver``), quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = require()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield d
    finally:
        d.quit()


def log_in(driver, base: str, password: str, user: str = "admin", timeout: float = 60) -> None:
    """Log into Airflow's UI at ``base`` through its login form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(f"{base}/auth/login")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)
