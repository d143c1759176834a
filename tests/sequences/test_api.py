"""/sequences and enrolments through the API: the contract's shapes, validation that says
what to fix, idempotent bulk enrolment, tenant isolation (docs/sequences.md)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.events.models import Event
from shvya.templates.models import Template
from tests.sequences.conftest import create_sequence, enroll, enrollments, new_lead
from tests.support import T0, Tenant

# Timing, content and policy code: the same on either database (tests/sequences/conftest.py).
pytestmark = pytest.mark.one_database

CONTRACT = {
    "name": "Onboarding",
    "stop_on": ["reply", "stage_change", "unsubscribe", "handoff"],
    "steps": [
        {
            "channel": "whatsapp",
            "after": {"days": 0, "hours": 0, "minutes": 0},
            "template": {"name": "welcome", "language": "en", "params": ["Asha"]},
        },
        {
            "channel": "email",
            "after": {"days": 2},
            "window": {"from": "09:00", "to": "18:00", "weekdays": [1, 2, 3, 4, 5]},
            "subject": "Your trial",
            "text": "Hello again",
        },
        {"channel": "sms", "after": {"hours": 3}, "business_days": True, "ai": "Ask for a call"},
    ],
}


def _template(factory: sessionmaker[Session], tenant: Tenant, status: str) -> None:
    with factory() as session:
        session.add(
            Template(
                company_id=tenant.company_id,
                channel="wa_cloud",
                name="welcome",
                language="en",
                category="MARKETING",
                body="Hi {{1}}",
                components={},
                status=status,
                created_at=T0,
                updated_at=T0,
            )
        )
        session.commit()


def test_the_contracts_sequence_is_created_read_updated_and_deactivated(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    _template(session_factory, acme, "approved")
    created = client.post("/sequences", json=CONTRACT, headers=acme.admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["active"] is True
    assert [s["channel"] for s in body["steps"]] == ["whatsapp", "email", "sms"]
    assert body["steps"][1]["window"] == {
        "from": "09:00",
        "to": "18:00",
        "weekdays": [1, 2, 3, 4, 5],
    }
    assert body["steps"][2]["ai"] == "Ask for a call"
    assert body["steps"][0]["template"]["params"] == ["Asha"]
    seq = body["id"]
    assert client.get(f"/sequences/{seq}", headers=acme.agent).json() == body
    assert client.get("/sequences", headers=acme.agent).json()["total"] == 1

    patched = client.patch(
        f"/sequences/{seq}",
        json={"name": "Onboarding v2", "stop_on": ["reply"], "steps": [CONTRACT["steps"][1]]},
        headers=acme.admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Onboarding v2"
    assert len(patched.json()["steps"]) == 1

    lead = new_lead(client, acme, ("email", "asha@example.org"))
    assert enroll(client, acme, seq, lead_ids=[lead]) == {"enrolled": 1, "already": 0}
    gone = client.delete(f"/sequences/{seq}", headers=acme.admin)
    assert gone.status_code == 200
    assert gone.json()["active"] is False
    [row] = enrollments(client, acme, seq)
    assert (row["status"], row["stop_reason"]) == ("stopped", "sequence_deactivated")
    refused = client.post(
        f"/sequences/{seq}/enrollments", json={"lead_ids": [lead]}, headers=acme.agent
    )
    assert refused.status_code == 409
    assert "active true" in refused.json()["detail"]


def test_a_template_step_names_an_approved_template_of_its_channel(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    missing = client.post("/sequences", json=CONTRACT, headers=acme.admin)
    assert missing.status_code == 422
    assert "steps[0].template" in missing.json()["detail"]
    _template(session_factory, acme, "submitted")
    pending = client.post("/sequences", json=CONTRACT, headers=acme.admin)
    assert pending.status_code == 422
    assert "is submitted, not approved" in pending.json()["detail"]


def test_validation_says_what_to_fix(client: TestClient, acme: Tenant) -> None:
    def problem(step: dict[str, object]) -> str:
        response = client.post(
            "/sequences", json={"name": "Bad", "steps": [step]}, headers=acme.admin
        )
        assert response.status_code == 422, response.text
        return str(response.json())

    assert "exactly one of text, template or ai" in problem(
        {"channel": "sandbox", "text": "a", "ai": "b"}
    )
    assert "exactly one of text, template or ai" in problem({"channel": "sandbox"})
    assert "needs a subject" in problem({"channel": "email", "text": "hi"})
    assert "subject is for email steps only" in problem(
        {"channel": "sms", "subject": "x", "text": "hi"}
    )
    assert "not before to" in problem(
        {"channel": "sandbox", "text": "a", "window": {"from": "18:00", "to": "09:00"}}
    )
    assert "name each day once" in problem(
        {
            "channel": "sandbox",
            "text": "a",
            "window": {"from": "09:00", "to": "18:00", "weekdays": [1, 1]},
        }
    )
    assert "weekdays.0: Input should be greater than or equal to 1" in problem(
        {
            "channel": "sandbox",
            "text": "a",
            "window": {"from": "09:00", "to": "18:00", "weekdays": [0]},
        }
    )
    assert "at most 365 days" in problem(
        {"channel": "sandbox", "text": "a", "after": {"days": 365, "hours": 1}}
    )
    assert "sms has no approved templates" in problem({"channel": "sms", "template": {"name": "x"}})
    too_many = client.post(
        "/sequences",
        json={"name": "Long", "steps": [{"channel": "sandbox", "text": "a"}] * 51},
        headers=acme.admin,
    )
    assert too_many.status_code == 422


def test_bulk_enrolment_is_idempotent_and_all_or_nothing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    seq = create_sequence(client, acme)["id"]
    leads = [new_lead(client, acme, ("sandbox", f"+1415555010{i}")) for i in range(3)]
    assert enroll(client, acme, seq, lead_ids=leads[:2]) == {"enrolled": 2, "already": 0}
    assert enroll(client, acme, seq, lead_ids=leads) == {"enrolled": 1, "already": 2}
    assert enroll(client, acme, seq, lead_ids=leads) == {"enrolled": 0, "already": 3}
    # Every lead in the entry stage: all three are there already.
    assert enroll(client, acme, seq, stage="New") == {"enrolled": 0, "already": 3}
    with session_factory() as session:
        events = session.scalars(select(Event).where(Event.type == "SequenceEnrolled")).all()
    assert len(events) == 3

    unknown = "00000000-0000-7000-8000-000000000001"
    other = create_sequence(client, acme, name="Other")["id"]
    response = client.post(
        f"/sequences/{other}/enrollments",
        json={"lead_ids": [leads[0], unknown]},
        headers=acme.agent,
    )
    assert response.status_code == 404
    assert unknown in response.json()["detail"]
    assert enrollments(client, acme, other) == []  # nothing half-done

    # Unenrolled, then enrolled again: a new enrolment from the first step.
    gone = client.delete(f"/sequences/{seq}/enrollments/{leads[0]}", headers=acme.agent)
    assert gone.status_code == 200
    assert (gone.json()["status"], gone.json()["stop_reason"]) == ("stopped", "unenrolled")
    assert enroll(client, acme, seq, lead_ids=[leads[0]]) == {"enrolled": 1, "already": 0}
    assert len(enrollments(client, acme, seq)) == 4


def test_another_company_sees_and_enrols_nothing(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    seq = create_sequence(client, acme)["id"]
    acme_lead = new_lead(client, acme, ("sandbox", "+14155550100"))
    globex_lead = new_lead(client, globex, ("sandbox", "+14155550100"))
    assert client.get(f"/sequences/{seq}", headers=globex.admin).status_code == 404
    assert client.get(f"/sequences/{seq}/enrollments", headers=globex.agent).status_code == 404
    steal = client.post(
        f"/sequences/{seq}/enrollments", json={"lead_ids": [globex_lead]}, headers=globex.agent
    )
    assert steal.status_code == 404
    # Acme cannot enrol Globex's lead into its own sequence either.
    foreign = client.post(
        f"/sequences/{seq}/enrollments", json={"lead_ids": [globex_lead]}, headers=acme.agent
    )
    assert foreign.status_code == 404
    assert (
        client.patch(f"/sequences/{seq}", json={"name": "x"}, headers=globex.admin).status_code
        == 404
    )
    assert client.delete(f"/sequences/{seq}", headers=globex.admin).status_code == 404
    assert (
        client.delete(f"/sequences/{seq}/enrollments/{acme_lead}", headers=globex.agent).status_code
        == 404
    )
    assert client.get("/sequences", headers=globex.agent).json()["total"] == 0


def test_a_stage_can_name_a_sequence_its_new_leads_are_enrolled_in(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    seq = create_sequence(client, acme)["id"]
    pipelines = client.get("/pipelines", headers=acme.agent).json()
    qualified = next(s["id"] for s in pipelines[0]["stages"] if s["name"] == "Qualified")
    foreign = create_sequence(client, globex)["id"]
    bad = client.patch(
        f"/stages/{qualified}", json={"auto_enroll_sequence_id": foreign}, headers=acme.admin
    )
    assert bad.status_code == 422
    set_ = client.patch(
        f"/stages/{qualified}", json={"auto_enroll_sequence_id": seq}, headers=acme.admin
    )
    assert set_.status_code == 200, set_.text
    assert set_.json()["auto_enroll_sequence_id"] == seq
    lead = new_lead(client, acme, ("sandbox", "+14155550100"))
    assert enrollments(client, acme, seq) == []
    moved = client.patch(f"/leads/{lead}", json={"stage": "Qualified"}, headers=acme.agent)
    assert moved.status_code == 200, moved.text
    [row] = enrollments(client, acme, seq)
    assert (row["lead_id"], row["status"]) == (lead, "active")
    # A lead made straight into the stage enters it too.
    made = new_lead(client, acme, ("sandbox", "+14155550101"), stage="Qualified")
    assert {r["lead_id"] for r in enrollments(client, acme, seq)} == {lead, made}
