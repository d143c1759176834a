"""The sandbox page as a person uses it: Debian's Chromium, driven by Playwright, against the
app under a real uvicorn with the embedded worker answering in its background threads.
On both databases: the browser starts once per module, and the PostgreSQL run (its worker
also listening for NOTIFY) adds about two seconds.

Without /usr/bin/chromium or the playwright package this skips with the reason, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from shvya.app import create_app
from shvya.config import Settings
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from tests.support import FakeClock, Tenant
from tests.web.support import answer_on_sandbox, sandbox_reply_to

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling out, and this machine's
# closed network refuses it many times a second. Playwright gives every launch a new empty
# profile of its own (its --user-data-dir), so nothing carries over between runs.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPLY_TIMEOUT_MS = 10_000
# Markup, so the bubbles prove what a lead typed is shown as text and never interpreted.
QUESTION = 'Hi <b>there</b>, what does the pro plan cost? <img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    missing = None
    if not CHROMIUM.exists():
        missing = f"Debian's Chromium is not at {CHROMIUM} (apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing is not None:
        if IN_CI:
            pytest.fail(f"{missing} (CI=true: the browser test must run)", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def worker(engine: Engine, settings: Settings, clock: FakeClock) -> Iterator[EmbeddedWorker]:
    # The app and the worker share the `clock` fixture, a FakeClock frozen at T0, as the
    # channel tests' make_worker does: a job is due for the worker when that clock says so,
    # whatever the wall clock says, and every timestamp is on one time line. Time passes
    # once, by the stage's quiet period after the message (one message, so the 15 s pacing
    # between replies never applies).
    worker = EmbeddedWorker(
        engine,
        handlers={**default_handlers(), "ai.engage": answer_on_sandbox},
        clock=clock,
        settings=settings,
    )
    yield worker
    worker.stop(grace_seconds=5)  # a no-op when uvicorn's shutdown already stopped it


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock, worker: EmbeddedWorker) -> FastAPI:
    # Wired as `shvya serve` wires it: the requests' commits wake the worker, and uvicorn's
    # lifespan starts its threads (EmbeddedWorker.start) and stops them (.stop).
    return create_app(settings, engine=engine, clock=clock, job_engine=worker)


def test_a_person_chats_with_shvya_and_sees_the_reply_without_reloading(
    chromium: Browser,
    live_server: str,
    default_company: Tenant,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    reply = sandbox_reply_to(QUESTION)
    context = chromium.new_context(viewport={"width": 760, "height": 560})
    try:
        page = context.new_page()
        dialogs: list[str] = []
        page_errors: list[str] = []

        def refuse_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", refuse_dialog)
        page.on("pageerror", lambda error: page_errors.append(str(error)))

        page.goto(f"{live_server}/")
        expect(page.locator("#company")).to_have_text("Default")
        expect(page.locator("#empty")).to_be_visible()
        page.evaluate("window.sameDocument = true")  # gone if anything reloads the page

        page.locator("#text").fill(QUESTION)
        page.get_by_role("button", name="Send").click()

        bubbles = page.locator(".bubble .text")
        expect(bubbles).to_have_text([QUESTION], timeout=REPLY_TIMEOUT_MS)  # stored
        clock.advance(seconds=3)  # the stage's quiet period: the reply is due
        expect(bubbles).to_have_text([QUESTION, reply], timeout=REPLY_TIMEOUT_MS)
        expect(page.locator(".bubble.out .meta")).to_contain_text("sent")
        expect(page.locator("#text")).to_have_value("")
        assert page.evaluate("window.sameDocument") is True
        assert page.locator(".bubble b, .bubble img").count() == 0
        assert dialogs == []
        assert page_errors == []
        [cookie] = context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
            "shvya_sandbox",
            True,
            "Strict",
        )
        page.screenshot(path=tmp_path / "sandbox.png")

        page.reload()
        expect(bubbles).to_have_text([QUESTION, reply])
        expect(page.locator(".bubble").first).to_have_class("bubble in")
        expect(page.locator(".bubble").last).to_have_class("bubble out")
    finally:
        context.close()

    stranger = chromium.new_context()
    try:
        other = stranger.new_page()
        other.goto(f"{live_server}/")
        expect(other.locator("#company")).to_have_text("Default")  # its first poll answered
        expect(other.locator("#empty")).to_be_visible()
        expect(other.locator(".bubble")).to_have_count(0)
    finally:
        stranger.close()
