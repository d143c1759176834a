"""An AI-written step the guardrail refuses is not sent: the enrolment waits for a person and
the lead shows as needing one (docs/sequences.md, "Running a step", 7)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from shvya.config import Settings
from tests.fakes.openai_api import FakeOpenAI
from tests.sequences.conftest import create_sequence, enroll, enrollments, new_lead
from tests.support import FakeClock, Tenant, choose_model, fake_provider_settings

# Timing, content and policy code: the same on either database (tests/sequences/conftest.py).
pytestmark = pytest.mark.one_database

PHONE = "+14155550100"
# 33 words, and a price no source of Acme's states.
INVENTED = (
    "Hi Asha, just checking in about the plan we discussed last week. It is only $99 a month "
    "this week, so it is a great moment to start. Would a short call tomorrow suit you?"
)


@pytest.fixture
def settings(database_url: str, fake_openai: FakeOpenAI) -> Settings:
    return Settings(database_url=database_url, **fake_provider_settings(fake_openai))


def test_a_draft_the_guardrail_refuses_pauses_for_a_person(
    client: TestClient,
    acme: Tenant,
    fake_openai: FakeOpenAI,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    choose_model(client, acme, "bumpup", "openai", "gpt-4o-mini")
    for _ in range(3):
        fake_openai.reply(INVENTED)
    seq = create_sequence(
        client, acme, steps=[{"channel": "sandbox", "ai": "Offer a discount to close this week"}]
    )["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    work()
    [row] = enrollments(client, acme, seq)
    assert (row["status"], row["hold_reason"]) == ("paused", "needs_person")
    messages = client.get(f"/leads/{lead}/messages", headers=acme.agent).json()["items"]
    assert [m for m in messages if m["direction"] == "out"] == []
    waiting = client.get("/leads", params={"needs_person": "true"}, headers=acme.agent).json()
    assert [item["id"] for item in waiting["items"]] == [lead]
    # Another tick and run send nothing: the step waits for the person.
    assert tick() == 0
    work()
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "paused"


def test_a_reply_while_the_model_writes_stops_the_step(
    client: TestClient,
    acme: Tenant,
    fake_openai: FakeOpenAI,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    """The lead writes while the model drafts the step (no transaction is open during the call):
    the step is checked again after the call and does not go."""
    choose_model(client, acme, "bumpup", "openai", "gpt-4o-mini")
    seq = create_sequence(
        client, acme, steps=[{"channel": "sandbox", "ai": "Invite them to a demo"}]
    )["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    clock.advance(seconds=30)
    written: list[int] = []

    def lead_writes(request: object) -> None:
        if not written:
            body = {"channel": "sandbox", "from": PHONE, "text": "Actually, call me tomorrow"}
            written.append(
                client.post("/inbound-message", json=body, headers=acme.agent).status_code
            )

    fake_openai.on_request = lead_writes
    fake_openai.reply(
        "Hi Asha, would you like to see how the plan works for your team? We could walk you "
        "through it in a short demo at a time that suits you. Shall I send a few options?"
    )
    work()
    assert written == [201]
    [row] = enrollments(client, acme, seq)
    assert (row["status"], row["stop_reason"]) == ("stopped", "reply")
    messages = client.get(f"/leads/{lead}/messages", headers=acme.agent).json()["items"]
    assert [m for m in messages if m["meta"].get("purpose") == "sequence_step"] == []
