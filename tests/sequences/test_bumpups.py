"""Automatic bump-ups (docs/scheduler.md): a lead whose last message is ours and who stays
silent for the stage's idle time gets a `followup.bumpup` job from the scheduler, at most the
stage's maximum since it last wrote; never by email, never while the AI is paused, never to a
suppressed address; two schedulers at once never double one. Leads talk to Acme's desk on the
sandbox channel (tests/ai/salesperson.py), the AI answers them, and time is a FakeClock."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.crm import service as crm
from shvya.crm.models import Lead
from shvya.crm.schemas import LeadCreateIn
from shvya.handlers import default_due_sources, default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.models import Job
from shvya.sequences.bumpups import due_bumpups
from shvya.sequences.scheduler import TickReport, run_tick
from tests.ai.salesperson import Desk
from tests.support import FakeClock, Tenant, make_tenant

QUESTION = "We need a CRM for our sales team, what does the premium plan cost?"
PHONES = iter(f"+9198200{n:05d}" for n in range(1, 100_000))


@pytest.fixture
def desk(
    client: TestClient,
    acme: Tenant,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> Desk:
    desk = Desk(client, acme, engine, settings, clock, session_factory)
    desk.setup()
    return desk


def conversation(desk: Desk) -> str:
    """A lead asks; the AI answers (our message is the last). Returns the lead's id."""
    lead_id = str(desk.converse(QUESTION, phone=next(PHONES))["lead_id"])
    assert [m["meta"]["purpose"] for m in desk.replies(lead_id)] == ["reply"]
    return lead_id


def tick(desk: Desk) -> TickReport:
    return run_tick(desk.factory, now=desk.clock.now(), sources=[due_bumpups])


def bumpup_jobs(desk: Desk, lead_id: str | None = None) -> list[Job]:
    query = select(Job).where(Job.type == "followup.bumpup").order_by(Job.created_at)
    if lead_id is not None:
        query = query.where(Job.lead_id == uuid.UUID(lead_id))
    with desk.factory() as session:
        return list(session.scalars(query))


def patch_stage(desk: Desk, name: str, **fields: Any) -> dict[str, Any]:
    response = desk.client.patch(
        f"/stages/{desk.stage_id(name)}", json=fields, headers=desk.tenant.admin
    )
    assert response.status_code == 200, response.text
    stage: dict[str, Any] = response.json()
    return stage


def purposes(desk: Desk, lead_id: str) -> list[str]:
    return [m["meta"]["purpose"] for m in desk.replies(lead_id)]


def test_the_idle_time_is_the_stage_s_and_counts_from_our_last_message(desk: Desk) -> None:
    quick = conversation(desk)  # New: 60 minutes
    slow = conversation(desk)  # Qualified: the sandbox's default, 20 hours
    moved = desk.client.patch(
        f"/leads/{slow}", json={"stage": "Qualified"}, headers=desk.tenant.agent
    )
    assert moved.status_code == 200, moved.text
    assert patch_stage(desk, "New", bumpup_idle_minutes=60)["bumpup_idle_minutes"] == 60
    stages = {
        s["name"]: s
        for s in desk.client.get("/pipelines", headers=desk.tenant.agent).json()[0]["stages"]
    }
    assert (stages["New"]["bumpup_idle_minutes"], stages["Qualified"]["bumpup_idle_minutes"]) == (
        60,
        None,
    )

    desk.clock.advance(minutes=59)
    assert tick(desk).enqueued == 0
    desk.clock.advance(minutes=2)
    assert tick(desk).enqueued == 1
    [job] = bumpup_jobs(desk)
    assert str(job.lead_id) == quick and job.payload == {"lead_id": quick}
    assert tick(desk).enqueued == 0  # a second tick over the same silence adds nothing
    # A new timing wakes the stage's quiet leads; the job not run yet is not enqueued again
    # (its idempotency key), and no second event says so.
    patch_stage(desk, "New", bumpup_max=3)
    assert tick(desk).enqueued == 0
    assert len(bumpup_jobs(desk)) == 1
    [scheduled] = desk.events(quick, "BumpupScheduled")
    assert scheduled.data["bumpup"] == 1 and scheduled.data["idle_minutes"] == 60

    desk.clock.advance(hours=18)  # 19 h 1 min after our reply
    assert tick(desk).enqueued == 0
    assert bumpup_jobs(desk, slow) == []
    desk.clock.advance(hours=1)
    assert tick(desk).enqueued == 1
    assert len(bumpup_jobs(desk, slow)) == 1


def test_at_most_the_stage_s_maximum_until_the_lead_writes_again(desk: Desk) -> None:
    patch_stage(desk, "New", bumpup_idle_minutes=60)
    lead_id = conversation(desk)
    for _ in range(2):  # the default maximum
        desk.clock.advance(minutes=61)
        assert tick(desk).enqueued == 1
        assert desk.run(after_seconds=0) == 1  # the worker sends it
    assert purposes(desk, lead_id) == ["reply", "bumpup", "bumpup"]
    # The second bump-up was timed from the first: 60 minutes of silence after each.
    first, second = [m for m in desk.replies(lead_id) if m["meta"]["purpose"] == "bumpup"]
    assert second["created_at"] > first["created_at"]
    desk.clock.advance(minutes=61)
    assert tick(desk).enqueued == 0
    desk.clock.advance(days=3)
    assert tick(desk).enqueued == 0
    assert purposes(desk, lead_id) == ["reply", "bumpup", "bumpup"]

    # The lead writes again: the count starts over.
    desk.converse(
        "Sorry, I was travelling. Does premium include reports?",
        phone=desk.lead(lead_id)["contacts"][0]["value"],
    )
    assert purposes(desk, lead_id)[-1] in {"reply", "handoff"}
    desk.clock.advance(minutes=61)
    assert tick(desk).enqueued == 1
    desk.run(after_seconds=0)
    assert purposes(desk, lead_id)[-1] == "bumpup"
    # A lower maximum stops it at once.
    patch_stage(desk, "New", bumpup_max=1)
    desk.clock.advance(minutes=61)
    assert tick(desk).enqueued == 0
    assert len(bumpup_jobs(desk, lead_id)) == 3


def quiet_email_lead(desk: Desk) -> str:
    """A lead reachable only by email who wrote to us and got an answer an hour ago."""
    response = desk.client.post(
        "/leads",
        json={"name": "Ravi", "contacts": [{"channel": "email", "value": "ravi@example.com"}]},
        headers=desk.tenant.agent,
    )
    assert response.status_code == 201, response.text
    lead_id = uuid.UUID(response.json()["id"])
    with desk.factory.begin() as session:
        lead = session.get_one(Lead, lead_id)
        lead.last_inbound_at = desk.clock.now() - timedelta(minutes=5)
        crm.touch_last_outbound(
            session, company_id=lead.company_id, lead_id=lead_id, at=desk.clock.now()
        )
    return str(lead_id)


def test_never_by_email_never_while_paused_never_to_a_suppressed_address(desk: Desk) -> None:
    patch_stage(desk, "New", bumpup_idle_minutes=60)
    control = conversation(desk)
    paused = conversation(desk)
    suppressed = conversation(desk)
    email_only = quiet_email_lead(desk)
    assert desk.client.post(f"/leads/{paused}/ai/pause", headers=desk.tenant.agent).is_success
    address = desk.lead(suppressed)["contacts"][0]["value"]
    added = desk.client.post(
        "/suppressions",
        json={"channel": "sandbox", "address": address},
        headers=desk.tenant.admin,
    )
    assert added.status_code == 201, added.text

    desk.clock.advance(minutes=61)
    assert tick(desk).enqueued == 1
    assert [str(j.lead_id) for j in bumpup_jobs(desk)] == [control]

    # The paused lead is left alone, not forgotten: once the AI is back, its silence counts.
    assert desk.client.post(f"/leads/{paused}/ai/resume", headers=desk.tenant.agent).is_success
    assert tick(desk).enqueued == 1
    assert [str(j.lead_id) for j in bumpup_jobs(desk)] == [control, paused]
    desk.clock.advance(days=2)
    assert tick(desk).enqueued == 0
    assert bumpup_jobs(desk, email_only) == [] and bumpup_jobs(desk, suppressed) == []


def test_a_maximum_of_zero_and_a_company_without_ai_get_none(desk: Desk) -> None:
    patch_stage(desk, "New", bumpup_idle_minutes=60, bumpup_max=0)
    conversation(desk)
    desk.clock.advance(minutes=61)
    assert tick(desk).enqueued == 0
    patch_stage(desk, "New", bumpup_max=None)  # back to the default: the silence now counts
    off = desk.client.patch("/company", json={"ai_enabled": False}, headers=desk.tenant.admin)
    assert off.status_code == 200, off.text
    assert tick(desk).enqueued == 0
    assert bumpup_jobs(desk) == []


def test_stage_bumpup_timing_is_validated_and_another_company_s_stage_is_404(
    desk: Desk, session_factory: sessionmaker[Session]
) -> None:
    stage_id = desk.stage_id("New")
    before = desk.client.get("/pipelines", headers=desk.tenant.agent).json()[0]["stages"][0]
    for body, field in (
        ({"bumpup_idle_minutes": 9}, "bumpup_idle_minutes"),
        ({"bumpup_idle_minutes": 43_201}, "bumpup_idle_minutes"),
        ({"bumpup_max": 11}, "bumpup_max"),
        ({"bumpup_max": -1}, "bumpup_max"),
        ({"bumpup_max": True}, "bumpup_max"),
        ({"ai_config": None}, "ai_config"),
    ):
        response = desk.client.patch(f"/stages/{stage_id}", json=body, headers=desk.tenant.admin)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text
    set_ = patch_stage(desk, "New", bumpup_idle_minutes=43_200, bumpup_max=10)
    assert (set_["bumpup_idle_minutes"], set_["bumpup_max"]) == (43_200, 10)
    assert set_["ai_config"] == before["ai_config"]  # left out: kept
    reset = patch_stage(desk, "New", bumpup_idle_minutes=None)
    assert (reset["bumpup_idle_minutes"], reset["bumpup_max"]) == (None, 10)
    as_agent = desk.client.patch(
        f"/stages/{stage_id}", json={"bumpup_max": 1}, headers=desk.tenant.agent
    )
    assert as_agent.status_code == 403
    globex = make_tenant(session_factory, "Globex")
    theirs = desk.client.patch(f"/stages/{stage_id}", json={"bumpup_max": 1}, headers=globex.admin)
    assert theirs.status_code == 404
    with desk.factory() as session:
        changes = session.execute(
            text("SELECT count(*) FROM events WHERE type = 'StageBumpupTimingChanged'")
        ).scalar_one()
    assert changes == 2


# --- several schedulers at once (PostgreSQL) --------------------------------------------------


def quiet_sandbox_leads(desk: Desk, count: int) -> list[uuid.UUID]:
    """`count` sandbox leads who wrote, got our answer and have been silent for two days;
    made as the inbound path and the send record them, without running the AI for each."""
    ids = []
    with desk.factory.begin() as session:
        for _ in range(count):
            lead = crm.create_lead(
                session,
                company_id=desk.tenant.company_id,
                data=LeadCreateIn.model_validate(
                    {"contacts": [{"channel": "sandbox", "value": next(PHONES)}]}
                ),
                region="IN",
                actor="test",
                now=desk.clock.now(),
            )
            lead.last_inbound_at = desk.clock.now() - timedelta(days=2, minutes=1)
            crm.touch_last_outbound(
                session,
                company_id=lead.company_id,
                lead_id=lead.id,
                at=desk.clock.now() - timedelta(days=2),
            )
            ids.append(lead.id)
    return ids


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_schedulers_racing_enqueue_each_bumpup_once(desk: Desk) -> None:
    leads = quiet_sandbox_leads(desk, 60)
    barrier = threading.Barrier(2)
    reports: list[TickReport] = []

    def scheduler() -> None:
        barrier.wait()
        reports.append(run_tick(desk.factory, now=desk.clock.now(), sources=[due_bumpups], limit=7))

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(not r.failed for r in reports), [r.summary() for r in reports]
    jobs = bumpup_jobs(desk)
    assert sorted(j.lead_id for j in jobs) == sorted(leads)  # every lead once, none twice
    assert sum(r.enqueued for r in reports) == 60
    assert tick(desk).enqueued == 0


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_claim_reads_the_partial_index_of_due_leads(desk: Desk) -> None:
    """The tick's cost follows the due leads: its claim can be answered from
    ix_leads_next_bumpup alone (docs/scheduler.md, "Cost")."""
    with desk.factory() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            session.execute(
                text(
                    "EXPLAIN SELECT id FROM leads WHERE next_bumpup_at IS NOT NULL "
                    "AND next_bumpup_at <= now() AND NOT ai_paused "
                    "ORDER BY next_bumpup_at LIMIT 500 FOR UPDATE SKIP LOCKED"
                )
            ).scalars()
        )
    assert "ix_leads_next_bumpup" in plan, plan


# --- inside `shvya serve` ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_scheduler_inside_the_server_has_the_worker_send_a_bumpup(
    settings: Settings, engine: Engine, clock: FakeClock, session_factory: sessionmaker[Session]
) -> None:
    fast = settings.model_copy(update={"scheduler_interval_s": 0.05, "job_poll_seconds": 0.05})
    worker = EmbeddedWorker(engine, handlers=default_handlers(), clock=clock, settings=fast)
    app = create_app(
        fast, engine=engine, clock=clock, job_engine=worker, due_sources=default_due_sources()
    )
    acme = make_tenant(session_factory, "Acme")
    with TestClient(app) as client:
        desk = Desk(client, acme, engine, fast, clock, session_factory)
        desk.setup()
        patch_stage(desk, "New", bumpup_idle_minutes=30)
        lead_id = desk.write(QUESTION, phone=next(PHONES))["lead_id"]
        clock.advance(seconds=5)  # the reply's quiet period
        wait_for(lambda: purposes(desk, lead_id) == ["reply"])
        clock.advance(minutes=31)
        wait_for(lambda: purposes(desk, lead_id) == ["reply", "bumpup"])
        [job] = bumpup_jobs(desk, lead_id)
        assert job.status == "completed"
        assert app.state.scheduler.ticks > 1
    assert app.state.scheduler._thread is None  # stopped with the app


def wait_for(condition: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the server's scheduler and worker")
        time.sleep(0.05)
