"""Sequence steps run by the real job runner on the sandbox channel and through email to an
SMTP server on 127.0.0.1: timing, the window held at run time, every stop condition checked
when the step runs, and a step never sent twice (docs/sequences.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels import service as channels
from shvya.config import Settings
from shvya.events.models import Event
from shvya.jobs.service import enqueue_job
from tests.fakes.smtp_sink import SmtpSink
from tests.sequences.conftest import create_sequence, enroll, enrollments, new_lead
from tests.support import FakeClock, Tenant

# Timing, content and policy code: the same on either database (tests/sequences/conftest.py).
pytestmark = pytest.mark.one_database

PHONE = "+14155550100"
LONDON = "+447911123456"


def _steps_sent(client: TestClient, tenant: Tenant, lead: str) -> list[str]:
    response = client.get(f"/leads/{lead}/messages", params={"limit": 200}, headers=tenant.agent)
    assert response.status_code == 200, response.text
    items = sorted(response.json()["items"], key=lambda m: m["created_at"])
    return [
        m["text"]
        for m in items
        if m["direction"] == "out" and m["meta"].get("purpose") == "sequence_step"
    ]


def _events(factory: sessionmaker[Session], type_: str) -> list[Event]:
    with factory() as session:
        return list(
            session.scalars(select(Event).where(Event.type == type_).order_by(Event.created_at))
        )


def test_three_steps_run_end_to_end_each_once(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    seq = create_sequence(
        client,
        acme,
        steps=[
            {"channel": "sandbox", "text": "Hello from Acme"},
            {"channel": "sandbox", "after": {"days": 1}, "text": "Any questions?"},
            {"channel": "sandbox", "after": {"hours": 2}, "text": "Last note"},
        ],
    )["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])

    assert tick() == 1
    assert tick() == 0  # queued: the next tick skips it
    work()
    assert _steps_sent(client, acme, lead) == ["Hello from Acme"]
    [row] = enrollments(client, acme, seq)
    assert row["step"] == 1
    assert row["next_run_at"] == (clock.now() + timedelta(days=1)).isoformat().replace(
        "+00:00", "Z"
    ) or datetime.fromisoformat(row["next_run_at"]) == clock.now() + timedelta(days=1)

    # The same step's job run again (a redelivery): nothing is sent twice.
    with session_factory() as session:
        enqueue_job(
            session,
            "sequence.step",
            {"enrollment_id": row["id"], "position": 0},
            company_id=acme.company_id,
            now=clock.now(),
        )
        session.commit()
    work()
    assert _steps_sent(client, acme, lead) == ["Hello from Acme"]

    clock.advance(hours=23)
    assert tick() == 0  # not due yet
    clock.advance(hours=1)
    assert tick() == 1
    work()
    clock.advance(hours=2)
    assert tick() == 1
    work()
    assert _steps_sent(client, acme, lead) == ["Hello from Acme", "Any questions?", "Last note"]
    [row] = enrollments(client, acme, seq)
    assert (row["status"], row["step"], row["next_run_at"]) == ("completed", 3, None)
    assert len(_events(session_factory, "SequenceStepSent")) == 3
    assert len(_events(session_factory, "SequenceCompleted")) == 1
    assert tick() == 0


def test_a_step_outside_its_window_at_run_time_waits_and_later_steps_shift(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    """A London number (its zone is UTC in November). Enrolled Thursday 10:00 (inside 09-18),
    but the worker gets to it at 19:00: the step waits for Friday 09:00, and the next step
    (one hour after it) is due 10:00."""
    seq = create_sequence(
        client,
        acme,
        steps=[
            {
                "channel": "sandbox",
                "text": "In office hours",
                "window": {"from": "09:00", "to": "18:00", "weekdays": [1, 2, 3, 4, 5]},
            },
            {"channel": "sandbox", "after": {"hours": 1}, "text": "An hour later"},
        ],
    )["id"]
    lead = new_lead(client, acme, ("sandbox", LONDON))
    enroll(client, acme, seq, lead_ids=[lead])
    assert tick() == 1
    clock.current = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)
    work()
    assert _steps_sent(client, acme, lead) == []
    [row] = enrollments(client, acme, seq)
    assert row["hold_reason"] == "window until 2026-11-27T09:00:00+00:00"
    clock.current = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    work()
    assert _steps_sent(client, acme, lead) == ["In office hours"]
    [row] = enrollments(client, acme, seq)
    assert datetime.fromisoformat(row["next_run_at"]) == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert row["hold_reason"] is None


def test_a_window_is_the_leads_local_time(
    client: TestClient, acme: Tenant, tick: Callable[[], int]
) -> None:
    """10:00 UTC is 02:00 in San Francisco: a 09-18 step is due at 09:00 there (17:00 UTC)."""
    seq = create_sequence(
        client,
        acme,
        steps=[{"channel": "sandbox", "text": "Hi", "window": {"from": "09:00", "to": "18:00"}}],
    )["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    [row] = enrollments(client, acme, seq)
    assert datetime.fromisoformat(row["next_run_at"]) == datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    assert tick() == 0


def _stops(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
    between: Callable[[str], Any],
    **sequence: Any,
) -> tuple[dict[str, Any], list[str]]:
    """Enrol a lead, let the scheduler queue the step, do `between` (the lead's id) before the
    worker runs it; the enrolment as it ends and the steps that went."""
    seq = create_sequence(client, acme, **sequence)["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    assert tick() == 1
    clock.advance(seconds=30)
    between(lead)
    work()
    [row] = enrollments(client, acme, seq)
    return row, _steps_sent(client, acme, lead)


def test_a_reply_between_scheduling_and_sending_stops_the_step(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    def reply(lead: str) -> None:
        body = {"channel": "sandbox", "from": PHONE, "text": "Thanks, not now"}
        assert client.post("/inbound-message", json=body, headers=acme.agent).status_code in (
            200,
            201,
        )

    row, sent = _stops(client, acme, clock, tick, work, reply)
    assert (row["status"], row["stop_reason"], sent) == ("stopped", "reply", [])


def _move(client: TestClient, acme: Tenant, lead: str) -> None:
    patched = client.patch(f"/leads/{lead}", json={"stage": "Lost"}, headers=acme.agent)
    assert patched.status_code == 200


def _take_over(client: TestClient, acme: Tenant, lead: str) -> None:
    assert client.post(f"/leads/{lead}/ai/pause", headers=acme.agent).status_code == 200


def _unsubscribe(client: TestClient, acme: Tenant, lead: str) -> None:
    body = {"channel": "sandbox", "address": PHONE, "reason": "opt_out"}
    assert client.post("/suppressions", json=body, headers=acme.admin).status_code == 201


@pytest.mark.parametrize(
    ("change", "reason"),
    [(_move, "stage_change"), (_take_over, "handoff"), (_unsubscribe, "unsubscribed")],
    ids=["stage_change", "handoff", "unsubscribe"],
)
def test_a_change_between_scheduling_and_sending_stops_the_step(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
    session_factory: sessionmaker[Session],
    change: Callable[[TestClient, Tenant, str], None],
    reason: str,
) -> None:
    row, sent = _stops(client, acme, clock, tick, work, lambda lead: change(client, acme, lead))
    assert (row["status"], row["stop_reason"], sent) == ("stopped", reason, [])
    [event] = _events(session_factory, "SequenceStopped")
    assert event.data["reason"] == reason


def test_the_router_still_refuses_a_suppressed_lead_without_unsubscribe_in_stop_on(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    row, sent = _stops(
        client,
        acme,
        clock,
        tick,
        work,
        lambda lead: _unsubscribe(client, acme, lead),
        stop_on=["reply"],
    )
    assert row["status"] == "stopped"
    assert row["stop_reason"] == "suppressed"
    assert sent == []


def test_an_ai_step_is_written_with_the_bumpup_rules_and_sent(
    client: TestClient,
    acme: Tenant,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    seq = create_sequence(
        client, acme, steps=[{"channel": "sandbox", "ai": "Invite them to a demo"}]
    )["id"]
    lead = new_lead(client, acme, ("sandbox", PHONE))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    work()
    [text] = _steps_sent(client, acme, lead)
    assert 30 <= len(text.split()) <= 40
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "completed"


# --- email ------------------------------------------------------------------------------------

FROM = "sales@acme.example"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server
    channels.close_email_transports()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, public_url="https://shvya.example.com")


def test_email_steps_go_to_the_smtp_server_with_their_subjects(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    sink: SmtpSink,
    tick: Callable[[], int],
    work: Callable[[], int],
) -> None:
    connected = client.post(
        "/channels/email",
        json={
            "provider": "smtp",
            "from_email": FROM,
            "host": "127.0.0.1",
            "port": sink.port,
            "security": "none",
        },
        headers=acme.admin,
    )
    assert connected.status_code in (200, 201), connected.text
    template = client.post(
        "/templates/email",
        json={
            "name": "quote",
            "subject": "A quote for {{ first_name }}",
            "text": "Dear {{ name }}",
        },
        headers=acme.admin,
    )
    assert template.status_code == 201, template.text
    seq = create_sequence(
        client,
        acme,
        steps=[
            {"channel": "email", "subject": "Welcome to Acme", "text": "Hello Asha"},
            {"channel": "email", "after": {"days": 2}, "subject": "Still there?", "text": "Hi"},
            {"channel": "email", "after": {"days": 1}, "template": {"name": "quote"}},
        ],
    )["id"]
    lead = new_lead(client, acme, ("email", "asha@example.org"))
    enroll(client, acme, seq, lead_ids=[lead])
    tick()
    work()
    clock.advance(days=2)
    tick()
    work()
    clock.advance(days=1)
    tick()
    work()
    subjects = [r.message["Subject"] for r in sink.received]
    assert subjects == ["Welcome to Acme", "Still there?", "A quote for Asha"]
    assert "Dear Asha" in sink.received[2].message.get_body(("plain",)).get_content()
    assert sink.received[0].recipients == ["asha@example.org"]
    [row] = enrollments(client, acme, seq)
    assert row["status"] == "completed"


def test_a_stage_in_stop_on_is_stored_by_id_and_an_unknown_one_is_refused(
    client: TestClient, acme: Tenant
) -> None:
    created = create_sequence(client, acme, stop_on=["reply", "stage:Converted"])
    pipelines = client.get("/pipelines", headers=acme.agent).json()
    converted = next(s["id"] for s in pipelines[0]["stages"] if s["name"] == "Converted")
    assert created["stop_on"] == ["reply", f"stage:{converted}"]
    steps = [{"channel": "sandbox", "text": "Hi"}]
    body = {"name": "X", "stop_on": ["stage:Won"], "steps": steps}
    unknown = client.post("/sequences", json=body, headers=acme.admin)
    assert unknown.status_code == 422
    assert "stage 'Won' not found" in unknown.text


@pytest.mark.parametrize(
    ("stage", "stops"), [("Converted", True), ("Nurture", False)], ids=["named", "another"]
)
def test_reaching_a_named_stage_stops_the_step_and_another_stage_does_not(
    client: TestClient,
    acme: Tenant,
    clock: FakeClock,
    tick: Callable[[], int],
    work: Callable[[], int],
    stage: str,
    stops: bool,
) -> None:
    """`stop_on: ["stage:Converted"]` without stage_change: reaching Converted ends the
    enrolment; a move to Nurture does not."""

    def move(lead: str) -> None:
        moved = client.patch(f"/leads/{lead}", json={"stage": stage}, headers=acme.agent)
        assert moved.status_code == 200, moved.text

    row, sent = _stops(client, acme, clock, tick, work, move, stop_on=["stage:Converted"])
    if stops:
        assert (row["status"], row["stop_reason"], sent) == ("stopped", "stage_reached", [])
    else:
        assert row["status"] != "stopped"
        assert sent
