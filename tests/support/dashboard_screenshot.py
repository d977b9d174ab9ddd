"""Make the README's picture of the dashboard: a throwaway PostgreSQL, pyproxy with a few pools
under load, and a headless Chromium signed in to the page.

    python -m tests.support.dashboard_screenshot [docs/dashboard.png]

Takes about 30 seconds; every connection goes to 127.0.0.1 and the load stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.admin_api import POOLS, TOKEN, admin_config, running_admin
from tests.support.browser import chromium
from tests.support.pgcluster import APP_DB, start_postgres
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER

LOAD_SECONDS = 50.0
WIDTH = int(os.environ.get("SCREENSHOT_WIDTH", "1280"))
EXTRA_POOLS = [
    {"name": "backend-pool", "mode": "transaction", "size": 8, "db": APP_DB, "user": SCRAM_USER},
    {"name": "reporting", "mode": "session", "size": 4, "db": APP_DB, "user": SCRAM_USER},
    {"name": "batch-jobs", "mode": "statement", "size": 3, "db": APP_DB, "user": ""},
]
# (pool, clients, seconds each transaction sleeps): more clients than servers queue.
LOAD = [("backend-pool", 12, 0.004), ("filepool", 5, 0.03), ("reporting", 3, 0.05)]


async def _client(port: int, pool: str, sleep: float, until: float) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=SCRAM_USER,
        password=SCRAM_PASSWORD,
        database=pool,
        statement_cache_size=0,
    )
    try:
        while time.monotonic() < until:
            await conn.execute(f"SELECT pg_sleep({sleep})")
    finally:
        await conn.close()


def _shoot(url: str, path: Path, seconds: float) -> None:
    driver = chromium(WIDTH, 820)
    try:
        if WIDTH < 700:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": True},
            )
        driver.get(url)
        wait = WebDriverWait(driver, 10)
        wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
        driver.find_element(By.ID, "token").send_keys(TOKEN + "\n")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-pool="batch-jobs"]'))
        time.sleep(seconds)  # let the charts fill
        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-pool="backend-pool"]')
        row.find_element(By.CSS_SELECTOR, 'button[data-action="details"]').click()
        driver.execute_script("document.activeElement.blur()")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": int(height), "deviceScaleFactor": 1, "mobile": WIDTH < 700},
        )
        time.sleep(1.2)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()


async def main(path: Path) -> None:
    pg = start_postgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = admin_config(pg, Path(tmp) / "state.db")
            async with running_admin(config) as admin:
                for pool in EXTRA_POOLS:
                    resp = await admin.http.post(POOLS, json=pool)
                    resp.raise_for_status()
                until = time.monotonic() + LOAD_SECONDS
                load = [
                    _client(admin.client_port, pool, sleep, until)
                    for pool, count, sleep in LOAD
                    for _ in range(count)
                ]
                url = f"http://127.0.0.1:{admin.app.admin_port}/"
                shot = asyncio.to_thread(_shoot, url, path, LOAD_SECONDS - 8)
                results = await asyncio.gather(shot, *load, return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    raise errors[0]
    finally:
        with contextlib.suppress(Exception):
            pg.close()
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")))
