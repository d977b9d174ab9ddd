"""A headless Chromium driven by Selenium (Debian's chromium and chromium-driver), and the
requests it made, read from its performance log (the DevTools Network events)."""

from __future__ import annotations

import json
import shutil
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = (
    "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
)


def chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels, recording its network
    events. Uses the chromedriver on PATH: nothing is downloaded."""
    binary = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        raise RuntimeError(f"no Chromium or chromedriver found: {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """URLs of the requests the page made since the last call (the log is drained)."""
    urls = []
    for entry in driver.get_log("performance"):
        message: dict[str, Any] = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Messages the page logged at level SEVERE since the last call (script errors, CSP)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
