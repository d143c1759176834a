"""/docs and /redoc on a machine without internet: Debian's Chromium, driven by Playwright,
opens both pages with every request to a host other than 127.0.0.1 refused, and sees the
API's operations. Their scripts and styles are SHVYA's own static files
(src/shvya/web/static/docs/README.md).

Without Chromium on PATH or the playwright package this skips with the reason, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import IN_CI

# What the browser shows of the API's docs is the same on either database.
pytestmark = pytest.mark.one_database

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

LOAD_TIMEOUT_MS = 20_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    missing = None
    if executable is None:
        missing = "Debian's Chromium is not on PATH (apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing is not None:
        if IN_CI:
            pytest.fail(f"{missing} (CI=true: the browser test must run)", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def offline_page(chromium: Browser) -> Iterator[tuple[Page, list[str], list[str]]]:
    """A page whose requests to any host but 127.0.0.1 are aborted, as without internet; the
    refused addresses and the page's script errors are listed."""
    context = chromium.new_context()
    refused: list[str] = []
    errors: list[str] = []

    def only_this_machine(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    context.route("**/*", only_this_machine)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page, refused, errors
    finally:
        context.close()


def test_swagger_ui_shows_the_operations_without_internet(
    offline_page: tuple[Page, list[str], list[str]], live_server: str
) -> None:
    from playwright.sync_api import expect

    page, refused, errors = offline_page
    page.goto(f"{live_server}/docs")
    inbound = page.locator('.opblock-post [data-path="/inbound-message"]')
    expect(inbound).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    expect(page.locator(".opblock-post .opblock-summary-method").first).to_have_text("POST")
    expect(page.locator('.opblock-get [data-path="/leads"]')).to_be_visible()
    assert refused == []
    assert errors == []


def test_redoc_shows_the_operations_without_internet(
    offline_page: tuple[Page, list[str], list[str]], live_server: str, app: FastAPI
) -> None:
    from playwright.sync_api import expect

    summary = app.openapi()["paths"]["/inbound-message"]["post"]["summary"]
    page, refused, errors = offline_page
    page.goto(f"{live_server}/redoc")
    expect(page.locator("h2", has_text=summary)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    expect(page.get_by_text("/inbound-message", exact=True).first).to_be_attached()
    assert refused == []
    assert errors == []


def test_the_docs_pages_name_only_this_servers_files(client: TestClient) -> None:
    """Without a browser: every script, style and icon the two pages name is served here."""
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        assert html.headers["content-security-policy"] == "img-src 'self' data:"
        named = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert len(named) >= 2, (page, named)
        for url in named:
            assert url.startswith("/static/docs/"), (page, url)
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 500, url
        assert "'/openapi.json'" in html.text or '"/openapi.json"' in html.text
    assert "validatorUrl" in client.get("/docs").text
