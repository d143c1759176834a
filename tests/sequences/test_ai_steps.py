"""An AI-written step the guardrail refuses is not sent: the enrolment waits for a person and
the lead shows as needing one (docs/sequences.md, "Running a step", 7)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from shvya.config import Settings
from tests.fakes.openai_api import FakeOpenAI
from tests.sequences.conftest import create_sequence, enroll, enrollments, new_lead
from tests.support import Tenant, choose_model, fake_provider_settings

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
