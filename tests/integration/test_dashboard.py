"""The dashboard at GET / in a real headless Chromium: sign in, pools, create, change, delete,
live counts, connection details, phone width, and no request outside the admin origin.

pyproxy runs in this process's event loop, so every browser step runs in a worker thread
(``browse``): a blocking WebDriver call on the loop would stall the server it waits for.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.admin_api import (
    BUDGET,
    FILE_POOL,
    FILE_POOL_SIZE,
    POOLS,
    TOKEN,
    Admin,
    admin_config,
    running_admin,
)
from tests.support.browser import chromium, console_errors, requested_urls
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import CLUSTER_ID, SCRAM_PASSWORD, SCRAM_USER

API_POOL = "apipool"
API_POOL_SIZE = 3
POLL_CHECK_SECONDS = 4  # the page must ask for figures at least every 2 s
T = TypeVar("T")


@dataclass
class Site:
    admin: Admin
    origin: str  # scheme://host:port of the admin listener, as the browser sees it

    @property
    def http(self) -> httpx.AsyncClient:
        return self.admin.http


@pytest.fixture(scope="module")
async def site(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    state = tmp_path_factory.mktemp("dashboard") / "state.db"
    async with running_admin(admin_config(pg, Path(state))) as admin:
        pool = {"name": API_POOL, "mode": "transaction", "size": API_POOL_SIZE, "db": APP_DB}
        resp = await admin.http.post(POOLS, json={**pool, "user": SCRAM_USER})
        assert resp.status_code == 201, resp.text
        yield Site(admin, f"http://127.0.0.1:{admin.app.admin_port}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    driver = chromium(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
async def stays_on_its_origin(site: Site, browser: Chrome) -> AsyncIterator[None]:
    """After every test: each request the page made went to the admin listener, and the page
    logged no script error or blocked load (failed API calls, e.g. a 422, are expected)."""
    await browse(requested_urls, browser)  # start from an empty log
    await browse(console_errors, browser)
    yield
    urls = await browse(requested_urls, browser)
    assert [u for u in urls if not u.startswith(site.origin + "/")] == []
    errors = await browse(console_errors, browser)
    assert [e for e in errors if "Failed to load resource" not in e] == []


async def browse(step: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(step, *args)


def waiter(driver: Chrome, seconds: float = 10) -> WebDriverWait[Chrome]:
    return WebDriverWait(
        driver,
        seconds,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def css(driver: Chrome | WebElement, selector: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, selector)


def row(driver: Chrome, pool: str) -> WebElement:
    return css(driver, f'tr[data-pool="{pool}"]')


def field(driver: Chrome, pool: str, name: str) -> str:
    return css(row(driver, pool), f'[data-field="{name}"]').text.strip()


def wait_field(driver: Chrome, pool: str, name: str, value: str, seconds: float = 10) -> None:
    waiter(driver, seconds).until(
        lambda d: field(d, pool, name) == value,
        f"pool {pool}: {name} never showed {value!r}",
    )


def signed_in(driver: Chrome, origin: str) -> None:
    """The page, signed in (typing the token only when the tab does not have it yet)."""
    driver.get(origin + "/")
    waiter(driver).until(lambda d: css(d, "#login").is_displayed() or css(d, "#app").is_displayed())
    if css(driver, "#login").is_displayed():
        css(driver, "#token").send_keys(TOKEN)
        css(driver, "#login-form button[type=submit]").click()
    waiter(driver).until(lambda d: css(d, "#app").is_displayed())
    waiter(driver).until(lambda d: row(d, FILE_POOL))


def create_through_form(driver: Chrome, **values: str) -> None:
    form = css(driver, "#create-form")
    for name, value in values.items():
        control = css(form, f'[name="{name}"]')
        if control.tag_name == "select":
            Select(control).select_by_value(value)
        else:
            control.clear()
            control.send_keys(value)
    css(form, "button[type=submit]").click()


def click_action(driver: Chrome, pool: str, action: str) -> None:
    css(row(driver, pool), f'button[data-action="{action}"]').click()


# ---- the files ------------------------------------------------------------------------------


async def test_page_and_its_files_come_from_the_admin_listener(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.origin) as anonymous:  # no token needed
        page = await anonymous.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "connect-src 'self'" in policy
        assert "script-src 'self'" in policy
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(set(refs)) == [
            "static/dashboard.css",
            "static/dashboard.js",
            "static/favicon.svg",
        ]  # relative: the page works under https and behind a path prefix too
        texts = [page.text]
        for ref, media in [
            ("static/dashboard.js", "text/javascript"),
            ("static/dashboard.css", "text/css"),
            ("static/favicon.svg", "image/svg+xml"),
        ]:
            resp = await anonymous.get("/" + ref)
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith(media)
            assert resp.headers["x-content-type-options"] == "nosniff"
            texts.append(resp.text)
        for text in texts:  # nothing from a CDN: the only absolute URL is the SVG namespace
            assert set(re.findall(r"https?://[^\s\"'`]+", text)) <= {"http://www.w3.org/2000/svg"}
        head = await anonymous.head("/")
        assert head.status_code == 200
        assert head.content == b""
        for missing in ("/static/nothing.js", "/static/../admin/api.py", "/static/%2e%2e%2fapi.py"):
            resp = await anonymous.get(missing)
            assert resp.status_code == 404
            assert resp.json()["id"] == "not_found"
        # The data the page shows still needs the token.
        assert (await anonymous.get(f"/v2/databases/{CLUSTER_ID}/stats")).status_code == 401


# ---- signing in -----------------------------------------------------------------------------


def _sign_in_steps(driver: Chrome, origin: str) -> None:
    driver.get(origin + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    waiter(driver).until(lambda d: css(d, "#login").is_displayed())
    token = css(driver, "#token")
    assert token.get_attribute("type") == "password"
    assert token.accessible_name == "Admin token"
    assert not css(driver, "#app").is_displayed()

    token.send_keys("dop_v1_not-the-token\n")
    waiter(driver).until(lambda d: "not accepted" in css(d, "#login-error").text)
    assert not css(driver, "#app").is_displayed()
    assert driver.execute_script("return sessionStorage.length") == 0

    token.clear()
    token.send_keys(TOKEN + "\n")
    waiter(driver).until(lambda d: row(d, API_POOL))
    assert css(driver, "#token").get_attribute("value") == ""  # not left in the field

    driver.refresh()  # the tab keeps the token: no second sign-in
    waiter(driver).until(lambda d: row(d, FILE_POOL))
    assert not css(driver, "#login").is_displayed()

    first = driver.current_window_handle
    driver.switch_to.new_window("tab")  # another tab has its own session storage
    driver.get(origin + "/")
    waiter(driver).until(lambda d: css(d, "#login").is_displayed())
    driver.close()
    driver.switch_to.window(first)

    css(driver, "#signout").click()
    waiter(driver).until(lambda d: css(d, "#login").is_displayed())
    assert driver.execute_script("return sessionStorage.getItem('pyproxy.admin.token')") is None
    assert not driver.find_elements(By.CSS_SELECTOR, "tr[data-pool]")


async def test_the_token_is_asked_once_and_kept_for_the_tab(site: Site, browser: Chrome) -> None:
    await browse(_sign_in_steps, browser, site.origin)


# ---- the table ------------------------------------------------------------------------------


async def test_pools_are_listed_with_settings_and_the_remaining_budget(
    site: Site, browser: Chrome
) -> None:
    cluster = (await site.http.get(f"/v2/databases/{CLUSTER_ID}")).json()["database"]

    def steps(driver: Chrome) -> None:
        signed_in(driver, site.origin)
        values = {k: field(driver, FILE_POOL, k) for k in ("mode", "size", "db", "user")}
        assert values == {
            "mode": "transaction",
            "size": str(FILE_POOL_SIZE),
            "db": APP_DB,
            "user": SCRAM_USER,
        }
        assert field(driver, API_POOL, "size") == str(API_POOL_SIZE)
        waiter(driver).until(lambda d: css(d, "#remaining").text == str(cluster["pools_size_free"]))
        assert "backend server connections remaining" in css(driver, ".budget").text
        # A pool from the configuration file is read-only here; one from the API is not.
        assert "config file" in css(row(driver, FILE_POOL), "th").text
        assert not row(driver, FILE_POOL).find_elements(By.CSS_SELECTOR, "[data-action=edit]")
        assert not row(driver, FILE_POOL).find_elements(By.CSS_SELECTOR, "[data-action=delete]")
        assert css(row(driver, API_POOL), "[data-action=delete]").is_displayed()

    await browse(steps, browser)
    assert cluster["pools_size_free"] <= BUDGET - FILE_POOL_SIZE - API_POOL_SIZE


async def test_a_pool_created_through_the_form_is_live(site: Site, browser: Chrome) -> None:
    def steps(driver: Chrome) -> int:
        signed_in(driver, site.origin)
        waiter(driver).until(lambda d: css(d, "#remaining").text.isdigit())
        before = int(css(driver, "#remaining").text)
        create_through_form(
            driver, name="formpool", db=APP_DB, user=SCRAM_USER, size="4", mode="session"
        )
        waiter(driver).until(lambda d: row(d, "formpool"))
        assert field(driver, "formpool", "mode") == "session"
        assert field(driver, "formpool", "size") == "4"
        assert "formpool created" in css(driver, "#status").text
        waiter(driver).until(lambda d: css(d, "#remaining").text == str(before - 4))
        return before

    await browse(steps, browser)
    pool = (await site.http.get(f"{POOLS}/formpool")).json()["pool"]
    assert (pool["mode"], pool["size"], pool["db"], pool["user"]) == (
        "session",
        4,
        APP_DB,
        SCRAM_USER,
    )
    client = await asyncpg.connect(
        host="127.0.0.1",
        port=site.admin.client_port,
        user=SCRAM_USER,
        password=SCRAM_PASSWORD,
        database="formpool",
    )
    assert await client.fetchval("SELECT 7") == 7
    await client.close()


async def test_a_refused_pool_shows_the_api_message(site: Site, browser: Chrome) -> None:
    def steps(driver: Chrome) -> tuple[str, str]:
        signed_in(driver, site.origin)
        create_through_form(driver, name="toolarge", db=APP_DB, size="5000", mode="transaction")
        error = css(driver, "#create-error")
        waiter(driver).until(lambda d: "budget" in error.text)
        budget_text = error.text
        create_through_form(driver, name="x", db=APP_DB, size="2")
        waiter(driver).until(lambda d: "name" in error.text and error.text != budget_text)
        assert error.is_displayed()
        assert error.get_attribute("role") == "alert"
        assert not driver.find_elements(By.CSS_SELECTOR, 'tr[data-pool="toolarge"]')
        assert not driver.find_elements(By.CSS_SELECTOR, 'tr[data-pool="x"]')
        return budget_text, error.text

    budget_text, name_text = await browse(steps, browser)
    assert "exceeds the cluster's remaining budget" in budget_text
    assert "3" in name_text and "60" in name_text  # says what a name must be
    assert (await site.http.get(f"{POOLS}/toolarge")).status_code == 404


async def test_size_and_mode_are_changed_in_the_row(site: Site, browser: Chrome) -> None:
    body = {"name": "editpool", "mode": "transaction", "size": 2, "db": APP_DB}
    assert (await site.http.post(POOLS, json=body)).status_code == 201

    def steps(driver: Chrome) -> str:
        signed_in(driver, site.origin)
        waiter(driver).until(lambda d: row(d, "editpool"))
        click_action(driver, "editpool", "edit")
        size = css(row(driver, "editpool"), 'input[name="size"]')
        assert size.accessible_name == "Size of pool editpool"
        size.clear()
        size.send_keys("5000")
        click_action(driver, "editpool", "save")
        error = css(row(driver, "editpool"), ".row-error")
        waiter(driver).until(lambda d: "budget" in error.text)
        refused = error.text
        size = css(row(driver, "editpool"), 'input[name="size"]')
        size.clear()
        size.send_keys("6")
        Select(css(row(driver, "editpool"), 'select[name="mode"]')).select_by_value("statement")
        click_action(driver, "editpool", "save")
        wait_field(driver, "editpool", "size", "6")
        wait_field(driver, "editpool", "mode", "statement")
        return refused

    refused = await browse(steps, browser)
    assert "was not changed" in refused
    pool = (await site.http.get(f"{POOLS}/editpool")).json()["pool"]
    assert (pool["size"], pool["mode"]) == (6, "statement")


async def test_delete_asks_first(site: Site, browser: Chrome) -> None:
    body = {"name": "delpool", "mode": "transaction", "size": 1, "db": APP_DB}
    assert (await site.http.post(POOLS, json=body)).status_code == 201

    def ask(driver: Chrome, accept: bool) -> str:
        click_action(driver, "delpool", "delete")
        alert = waiter(driver).until(expected_conditions.alert_is_present())
        assert alert
        text = alert.text
        if accept:
            alert.accept()
        else:
            alert.dismiss()
        return text

    def dismissed(driver: Chrome) -> str:
        signed_in(driver, site.origin)
        waiter(driver).until(lambda d: row(d, "delpool"))
        return ask(driver, accept=False)

    question = await browse(dismissed, browser)
    assert "delpool" in question
    await asyncio.sleep(0.3)
    assert (await site.http.get(f"{POOLS}/delpool")).status_code == 200
    assert await browse(lambda d: row(d, "delpool").is_displayed(), browser)

    def accepted(driver: Chrome) -> None:
        ask(driver, accept=True)
        waiter(driver).until(
            lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-pool="delpool"]')
        )

    await browse(accepted, browser)
    assert (await site.http.get(f"{POOLS}/delpool")).status_code == 404


# ---- live figures ---------------------------------------------------------------------------


async def test_counts_rise_while_connections_are_held(site: Site, browser: Chrome) -> None:
    """Two clients hold the file pool's two servers in transactions, a third waits: the row
    shows it within seconds, without the page being reloaded."""

    def ready(driver: Chrome) -> None:
        signed_in(driver, site.origin)
        wait_field(driver, FILE_POOL, "clients", "0")
        driver.execute_script("window.notReloaded = true")

    await browse(ready, browser)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1",
            port=site.admin.client_port,
            user=SCRAM_USER,
            password=SCRAM_PASSWORD,
            database=FILE_POOL,
            statement_cache_size=0,
        )

    holders = [await connect() for _ in range(FILE_POOL_SIZE)]
    third = await connect()
    queued: asyncio.Task[Any] | None = None
    try:
        for conn in holders:
            await conn.execute("BEGIN; SELECT 1")
        queued = asyncio.create_task(third.fetchval("SELECT 1"))

        def busy(driver: Chrome) -> str:
            wait_field(driver, FILE_POOL, "clients", str(FILE_POOL_SIZE + 1))
            wait_field(driver, FILE_POOL, "servers", str(FILE_POOL_SIZE))
            wait_field(driver, FILE_POOL, "waiting", "1")
            chart = css(row(driver, FILE_POOL), '[data-field="wait"]')
            waiter(driver).until(lambda d: re.search(r"[1-9]", chart.text))
            return css(chart, "svg").get_attribute("aria-label") or ""

        label = await browse(busy, browser)
        assert label.startswith(f"Wait time of pool {FILE_POOL}: ")
        for conn in holders:
            await conn.execute("COMMIT")
        assert await asyncio.wait_for(queued, 5) == 1
        for _ in range(50):  # some transactions to count
            await holders[0].execute("SELECT 1")

        def settled(driver: Chrome) -> None:
            wait_field(driver, FILE_POOL, "waiting", "0")
            tps = css(row(driver, FILE_POOL), '[data-field="tps"]')
            waiter(driver).until(lambda d: re.search(r"[1-9]", tps.text))
            assert driver.execute_script("return window.notReloaded") is True

        await browse(settled, browser)
    finally:
        if queued is not None and not queued.done():
            queued.cancel()
        for conn in [*holders, third]:
            conn.terminate()
    await browse(lambda d: wait_field(d, FILE_POOL, "clients", "0"), browser)


async def test_connection_details_in_three_formats(site: Site, browser: Chrome) -> None:
    port = site.admin.client_port

    def steps(driver: Chrome) -> dict[str, str]:
        signed_in(driver, site.origin)
        button = css(row(driver, API_POOL), '[data-action="details"]')
        assert button.get_attribute("aria-expanded") == "false"
        button.click()
        details = css(driver, f'tr[data-details-for="{API_POOL}"]')
        waiter(driver).until(lambda d: details.is_displayed())
        assert button.get_attribute("aria-expanded") == "true"
        headings = [h.text for h in details.find_elements(By.TAG_NAME, "h3")]
        assert headings == ["Connection parameters", "Connection string", "Flags"]
        masked = details.text
        css(details, '[data-action="reveal"]').click()
        waiter(driver).until(lambda d: SCRAM_PASSWORD in details.text)
        codes = details.find_elements(By.TAG_NAME, "code")
        return {
            "masked": masked,
            "params": css(details, "dl").text,
            "uri": codes[0].text,
            "flags": codes[1].text,
        }

    shown = await browse(steps, browser)
    assert SCRAM_PASSWORD not in shown["masked"]
    assert f"port\n{port}" in shown["params"] or f"port {port}" in shown["params"]
    assert f"database {API_POOL}" in shown["params"].replace("\n", " ")
    assert shown["uri"] == (
        f"postgresql://{SCRAM_USER}:{quote(SCRAM_PASSWORD, safe='')}@127.0.0.1:{port}/"
        f"{API_POOL}?sslmode=disable"
    )
    assert shown["flags"] == (
        f"PGPASSWORD={SCRAM_PASSWORD} PGSSLMODE=disable psql -U {SCRAM_USER} -h 127.0.0.1 "
        f"-p {port} -d {API_POOL}"
    )
    conn = await asyncpg.connect(shown["uri"])  # the string shown is one that works
    try:
        assert await conn.fetchval("SELECT current_user") == SCRAM_USER
    finally:
        await conn.close()


# ---- layout and accessibility ---------------------------------------------------------------


def _fits(driver: Chrome) -> bool:
    return bool(
        driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    )


async def test_fits_a_desktop_and_a_phone_screen(site: Site, browser: Chrome) -> None:
    def steps(driver: Chrome) -> None:
        signed_in(driver, site.origin)
        assert driver.execute_script("return window.innerWidth") >= 1200
        assert _fits(driver), "horizontal scrolling at 1280 px"
        assert css(driver, "thead").is_displayed()
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
        )
        try:
            signed_in(driver, site.origin)
            assert driver.execute_script("return window.innerWidth") == 390
            assert _fits(driver), "horizontal scrolling at phone width"
            assert not css(driver, "thead").is_displayed()  # rows become cards
            delete = css(row(driver, API_POOL), '[data-action="delete"]')
            assert delete.is_displayed()
            assert delete.rect["x"] + delete.rect["width"] <= 390
            assert css(driver, "#create-form button[type=submit]").is_displayed()
            assert css(driver, "#remaining").is_displayed()
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    await browse(steps, browser)


async def test_every_control_has_an_accessible_name(site: Site, browser: Chrome) -> None:
    def steps(driver: Chrome) -> list[str]:
        signed_in(driver, site.origin)
        click_action(driver, API_POOL, "details")
        click_action(driver, API_POOL, "edit")
        nameless = []
        controls = driver.find_elements(By.CSS_SELECTOR, "input, select, button")
        for control in controls:
            if control.is_displayed() and not control.accessible_name.strip():
                nameless.append(control.get_attribute("outerHTML"))
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.spark")
        assert charts
        assert all(
            c.get_attribute("role") == "img" and c.get_attribute("aria-label") for c in charts
        )
        click_action(driver, API_POOL, "cancel")
        return nameless

    assert await browse(steps, browser) == []


async def test_requests_stay_on_the_admin_origin(site: Site, browser: Chrome) -> None:
    """The autouse check is not vacuous: the log sees the page's files and its API calls, and
    the figures are asked for again at least every 2 s."""

    def steps(driver: Chrome) -> tuple[list[str], list[str]]:
        signed_in(driver, site.origin)
        waiter(driver).until(lambda d: css(d, "#remaining").text.isdigit())
        loaded = requested_urls(driver)
        time.sleep(POLL_CHECK_SECONDS)
        return loaded, requested_urls(driver)

    loaded, later = await browse(steps, browser)
    paths = [u.removeprefix(site.origin) for u in loaded + later]
    assert {"/", "/static/dashboard.js", "/static/dashboard.css", "/v2/databases"} <= set(paths)
    assert f"/v2/databases/{CLUSTER_ID}/pools" in paths
    stats = f"{site.origin}/v2/databases/{CLUSTER_ID}/stats"
    assert later.count(stats) >= POLL_CHECK_SECONDS // 2
    assert all(u.startswith(site.origin + "/") for u in loaded + later)


async def test_an_installed_package_serves_the_page(tmp_path: Path) -> None:
    """The page's files are package data: a wheel built from the checkout carries them."""
    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"
    shutil.copytree(
        root / "pyproxy", source / "pyproxy", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    await run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)])
    wheel = next((tmp_path / "dist").glob("pyproxy-*.whl"))
    await run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)])
    probe = (
        "import pyproxy.admin.dashboard as d; page = d.Dashboard(); "
        "print(d.__file__); print(sorted(page.files)); "
        "print(page.serve([''], 'r').body.decode().count('static/dashboard.js'))"
    )
    out = await run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")}
    )
    where, files, refs = out.splitlines()
    assert where.startswith(str(tmp_path / "site"))
    assert files == str(sorted(["dashboard.css", "dashboard.js", "favicon.svg", "index.html"]))
    assert refs == "1"


async def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=cwd,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, f"{cmd} failed:\n{err.decode()}"
    return out.decode()
