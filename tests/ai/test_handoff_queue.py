"""The human half of a handoff: the leads waiting for a person (GET /leads?needs_person=true,
`shvya leads list --needs-person`), and resume, which answers what no one has answered."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from shvya.jobs.models import Job
from tests.ai.salesperson import Desk


@pytest.fixture
def desk(desk: Desk) -> Desk:
    desk.setup()
    return desk


def engage_jobs(desk: Desk) -> list[Job]:
    with desk.factory() as session:
        return list(
            session.scalars(select(Job).where(Job.type == "ai.engage").order_by(Job.created_at))
        )


def waiting(desk: Desk, **params: Any) -> list[dict[str, Any]]:
    response = desk.client.get(
        "/leads", params={"needs_person": "true", **params}, headers=desk.tenant.agent
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def hand_off(desk: Desk, phone: str, text: str = "Can I talk to a real person please?") -> str:
    inbound = desk.converse(text, phone=phone)
    [reply] = desk.replies(inbound["lead_id"])
    assert reply["meta"]["purpose"] == "handoff"
    return str(inbound["lead_id"])


def test_leads_needing_a_person_oldest_first_with_the_reason_and_since_when(desk: Desk) -> None:
    angry = hand_off(desk, "+919800000001", "This is ridiculous, worst service ever")
    desk.clock.advance(minutes=10)
    unknown = hand_off(desk, "+919800000002", "Do you offer drone delivery to Antarctica?")
    desk.clock.advance(minutes=10)
    asked = hand_off(desk, "+919800000003")
    answered = desk.converse("what does the basic plan cost?", phone="+919800000004")["lead_id"]
    paused_by_person = desk.converse("hello", phone="+919800000005")["lead_id"]
    desk.client.post(f"/leads/{paused_by_person}/ai/pause", headers=desk.tenant.agent)

    leads = waiting(desk)
    assert [lead["id"] for lead in leads] == [angry, unknown, asked]
    assert [lead["ai_paused_reason"] for lead in leads] == [
        "handoff: angry",
        "handoff: unknown_answer",
        "handoff: asked_for_person",
    ]
    assert all(lead["needs_person"] and lead["ai_paused"] for lead in leads)
    since = [lead["ai_paused_since"] for lead in leads]
    assert since == sorted(since) and len(set(since)) == 3
    assert desk.lead(answered)["needs_person"] is False
    assert desk.lead(paused_by_person)["needs_person"] is False
    paused = desk.client.get("/leads", params={"ai_paused": "true"}, headers=desk.tenant.agent)
    assert {lead["id"] for lead in paused.json()["items"]} == {
        angry,
        unknown,
        asked,
        paused_by_person,
    }
    assert [lead["id"] for lead in waiting(desk, limit=1, offset=1)] == [unknown]

    # A person takes the oldest over: it stays paused but no longer waits for a person.
    taken = desk.client.post(f"/leads/{angry}/ai/pause", headers=desk.tenant.agent).json()
    assert (taken["ai_paused"], taken["needs_person"]) == (True, False)
    assert taken["ai_paused_reason"] == "taken over by a person"
    assert taken["ai_paused_since"] == since[0]  # paused since the handoff, still
    [changed] = desk.events(angry, "AIPauseReasonChanged")
    assert changed.data == {"from": "handoff: angry", "to": "taken over by a person"}
    desk.client.post(f"/leads/{asked}/ai/resume", headers=desk.tenant.agent)
    assert [lead["id"] for lead in waiting(desk)] == [unknown]


def test_resume_answers_the_messages_that_came_while_paused_in_one_reply(desk: Desk) -> None:
    lead_id = hand_off(desk, "+919800000011")
    first = desk.converse("what does the basic plan cost?", phone="+919800000011")
    desk.clock.advance(seconds=30)
    second = desk.converse("and the premium plan?", phone="+919800000011")
    assert len(desk.replies(lead_id)) == 1  # the handoff message only: the AI kept quiet

    resumed = desk.client.post(f"/leads/{lead_id}/ai/resume", headers=desk.tenant.agent)
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert (body["ai_paused"], body["needs_person"], body["pending_messages"]) == (False, False, 2)
    assert body["job_id"] is not None
    again = desk.client.post(f"/leads/{lead_id}/ai/resume", headers=desk.tenant.agent).json()
    assert (again["pending_messages"], again["job_id"]) == (2, body["job_id"])  # one job

    desk.run()
    replies = desk.replies(lead_id)
    assert [m["meta"]["purpose"] for m in replies] == ["handoff", "reply"]
    assert replies[-1]["meta"]["answers"] == [first["message_id"], second["message_id"]]
    assert "4,999 INR" in replies[-1]["text"]
    job = desk.job(body["job_id"])
    assert (job["status"], job["result"]["outcome"]) == ("completed", "sent")

    # Everything is answered now: resuming again queues nothing and sends nothing.
    third = desk.client.post(f"/leads/{lead_id}/ai/resume", headers=desk.tenant.agent).json()
    assert (third["pending_messages"], third["job_id"]) == (0, None)
    desk.run()
    assert len(desk.replies(lead_id)) == 2


def test_resume_when_the_last_message_is_ours_queues_nothing(desk: Desk) -> None:
    lead_id = hand_off(desk, "+919800000021")  # the handoff message answered the lead
    jobs_before = len(engage_jobs(desk))
    resumed = desk.client.post(f"/leads/{lead_id}/ai/resume", headers=desk.tenant.agent).json()
    assert (resumed["ai_paused"], resumed["pending_messages"], resumed["job_id"]) == (
        False,
        0,
        None,
    )
    assert len(engage_jobs(desk)) == jobs_before
    desk.run()
    assert len(desk.replies(lead_id)) == 1
    # The next message is answered as usual.
    desk.converse("what does the premium plan cost?", phone="+919800000021")
    assert [m["meta"]["purpose"] for m in desk.replies(lead_id)] == ["handoff", "reply"]


def test_resume_leaves_out_imported_history_and_opt_in_keywords(desk: Desk) -> None:
    lead_id = hand_off(desk, "+919800000051")
    desk.clock.advance(minutes=1)
    imported = desk.client.post(
        f"/leads/{lead_id}/history",
        json={
            "messages": [
                {"direction": "in", "text": "price of premium?", "sent_at": "2026-11-26T10:00:30Z"}
            ]
        },
        headers=desk.tenant.agent,
    )
    assert imported.status_code in (200, 201), imported.text
    desk.converse("START", phone="+919800000051")
    resumed = desk.client.post(f"/leads/{lead_id}/ai/resume", headers=desk.tenant.agent).json()
    assert (resumed["pending_messages"], resumed["job_id"]) == (0, None)
    asked = desk.converse("what does the premium plan cost?", phone="+919800000051")
    [*_, reply] = desk.replies(lead_id)
    assert reply["meta"]["answers"] == [asked["message_id"]]


def test_resume_of_another_companys_lead_is_404_and_queues_nothing(desk: Desk) -> None:
    from tests.support import make_tenant

    lead_id = hand_off(desk, "+919800000031")
    desk.converse("what does the basic plan cost?", phone="+919800000031")
    other = make_tenant(desk.factory, "Globex")
    response = desk.client.post(f"/leads/{lead_id}/ai/resume", headers=other.agent)
    assert response.status_code == 404
    assert desk.lead(lead_id)["ai_paused"] is True
    desk.run()
    assert len(desk.replies(lead_id)) == 1


def test_the_cli_lists_the_leads_needing_a_person(desk: Desk, database_url: str) -> None:
    unknown = hand_off(desk, "+919800000041", "Do you offer drone delivery to Antarctica?")
    desk.clock.advance(minutes=5)
    asked = hand_off(desk, "+919800000042")
    answered = desk.converse("what does the basic plan cost?", phone="+919800000043")

    def shvya(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shvya", "leads", "list", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DATABASE_URL": database_url},
            check=False,
        )

    result = shvya("--needs-person")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == [unknown, asked]
    assert lines[0].endswith("[needs a person: handoff: unknown_answer since 2026-11-26 10:00]")
    assert lines[1].endswith("[needs a person: handoff: asked_for_person since 2026-11-26 10:05]")
    assert lines[2] == "leads 1-2 of 2"
    others = shvya(
        "--ai-on", "--channel", "sandbox", "--search", "9800000043", "--assigned-to", "none"
    )
    assert others.returncode == 0, others.stderr
    [line, total] = others.stdout.splitlines()
    assert line.startswith(answered["lead_id"]) and "[" not in line
    assert total == "leads 1-1 of 1"
