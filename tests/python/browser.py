"""Headless Debian Chromium driven over WebDriver (chromium-driver), for the web UI's
end-to-end tests. Flags as the machine notes require: no sandbox (root), no GPU, no background
networking (the machine's network is closed), a fresh profile per browser. Screenshots go to
tests/python/artifacts/ (kept as test artifacts)."""

from __future__ import annotations

import pathlib
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ARTIFACTS = pathlib.Path(__file__).parent / "artifacts"


def chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="steward-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def screenshot(driver: webdriver.Chrome, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
