"""A handoff that reaches a person, as a lead sees it in Chromium on the sandbox page: the
offline AI cannot answer and hands over; a person of the team replies through
POST /leads/{id}/messages and the lead sees it; the AI stays silent while the person has the
lead; resume answers the message still pending, once (docs/ai.md 5.5)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from shvya.ai.engage import HANDOFF_MESSAGES
from tests.ai.support import PRICING_MD
from tests.support import FakeClock, Tenant

# The real handlers (ai.engage with the offline provider, agent.reply), wired as `shvya serve`.
from tests.web.test_sandbox_ai_browser import app, worker  # noqa: F401
from tests.web.test_sandbox_browser import REPLY_TIMEOUT_MS, chromium  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Browser

UNANSWERABLE = "Is there a free trial?"  # the pricing knowledge base says nothing of one
PERSON = "Hi, Asha from the sales team here: yes, we can set up a 7-day trial for you."
FOLLOW_UP = "Great, and how much is the premium plan?"


def _wait_for_job(api: httpx.Client, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + REPLY_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in {"completed", "failed", "dead"}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_person_takes_over_a_handoff_and_resume_answers_what_is_pending_once(
    chromium: Browser,  # noqa: F811
    live_server: str,
    default_company: Tenant,
    clock: FakeClock,
) -> None:
    from playwright.sync_api import expect

    agent = default_company.agent
    with httpx.Client(base_url=live_server) as api:
        added = api.post(
            "/kb/documents",
            json={"title": "Pricing", "content": PRICING_MD},
            headers=default_company.admin,
        )
        assert added.status_code == 201, added.text
        stage = api.get("/pipelines", headers=agent).json()[0]["stages"][0]
        api.patch(
            f"/stages/{stage['id']}",
            json={"ai_config": {"quiet_seconds": 0}},  # the clock is frozen for the test
            headers=default_company.admin,
        ).raise_for_status()

        context = chromium.new_context()
        try:
            page = context.new_page()
            page.goto(f"{live_server}/")
            bubbles = page.locator(".bubble .text")

            # 1. The AI cannot answer: it says so and hands the lead to a person.
            page.locator("#text").fill(UNANSWERABLE)
            page.get_by_role("button", name="Send").click()
            expect(page.locator(".bubble.out .text").last).to_contain_text(
                HANDOFF_MESSAGES["en"], timeout=REPLY_TIMEOUT_MS
            )
            waiting = api.get("/leads", params={"needs_person": "true"}, headers=agent).json()[
                "items"
            ]
            [lead] = waiting
            assert lead["needs_person"] is True
            assert lead["ai_paused_reason"].endswith("unknown_answer")

            # 2. A person replies; past the sandbox's pacing between replies, it goes at once.
            clock.advance(seconds=60)
            sent = api.post(f"/leads/{lead['id']}/messages", json={"text": PERSON}, headers=agent)
            assert sent.status_code == 202, sent.text
            assert sent.json()["verdict"]["decision"] == "send_now"
            expect(page.locator(".bubble.out .text").last).to_have_text(
                PERSON, timeout=REPLY_TIMEOUT_MS
            )
            assert _wait_for_job(api, sent.json()["job_id"], agent)["status"] == "completed"
            after_person = api.get(f"/leads/{lead['id']}", headers=agent).json()
            assert after_person["ai_paused"] is True
            assert after_person["needs_person"] is False  # a person has answered

            # 3. The lead writes again: the person has the lead, the AI stays silent.
            clock.advance(seconds=60)
            page.locator("#text").fill(FOLLOW_UP)
            page.get_by_role("button", name="Send").click()
            expect(bubbles).to_have_count(4, timeout=REPLY_TIMEOUT_MS)
            expect(bubbles.last).to_have_text(FOLLOW_UP)
            page.wait_for_timeout(1500)  # time the worker would need to answer, if it did
            expect(bubbles).to_have_count(4)

            # 4. Resume: the pending message gets one answer, from the knowledge base.
            clock.advance(seconds=60)
            resumed = api.post(f"/leads/{lead['id']}/ai/resume", headers=agent).json()
            assert resumed["pending_messages"] == 1
            assert _wait_for_job(api, resumed["job_id"], agent)["status"] == "completed"
            expect(bubbles).to_have_count(5, timeout=REPLY_TIMEOUT_MS)
            expect(page.locator(".bubble.out .text").last).to_contain_text("4,999 INR")

            # Resuming again answers nothing twice.
            again = api.post(f"/leads/{lead['id']}/ai/resume", headers=agent).json()
            assert again["pending_messages"] == 0
            assert again["job_id"] is None
            page.wait_for_timeout(1000)
            expect(bubbles).to_have_count(5)
        finally:
            context.close()
