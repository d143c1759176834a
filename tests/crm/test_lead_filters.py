"""GET /leads filters, assignment, and the 422 for a query parameter a route does not take.

The AI's handoffs behind needs_person, and resume, are in tests/ai/test_handoff_queue.py."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from shvya.tenancy.models import User
from tests.support import T0, Tenant


def make_user(factory: sessionmaker[Session], tenant: Tenant, email: str) -> str:
    with factory() as session:
        user = User(company_id=tenant.company_id, email=email, name=email, created_at=T0)
        session.add(user)
        session.commit()
        return str(user.id)


def create_lead(client: TestClient, tenant: Tenant, name: str, *contacts: tuple[str, str]) -> str:
    body = {"name": name, "contacts": [{"channel": c, "value": v} for c, v in contacts]}
    response = client.post("/leads", json=body, headers=tenant.agent)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def names(client: TestClient, tenant: Tenant, **params: Any) -> list[str]:
    response = client.get("/leads", params=params, headers=tenant.agent)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return sorted(lead["name"] for lead in body["items"])


def test_filters_by_channel_search_stage_and_ai_state_within_the_company(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    create_lead(client, acme, "Ravi Kumar", ("wa_cloud", "+14155550101"))
    create_lead(client, acme, "Ana García", ("email", "Ana@Example.com"))
    bob = create_lead(
        client, acme, "Bob 100%_sure", ("sms", "+14155550103"), ("email", "bob@example.org")
    )
    # Globex has a lead with the same name, phone and channel: no filter ever shows it to Acme.
    create_lead(client, globex, "Ravi Kumar", ("wa_cloud", "+14155550101"))

    assert names(client, acme, channel="email") == ["Ana García", "Bob 100%_sure"]
    assert names(client, acme, channel="wa_cloud") == ["Ravi Kumar"]
    assert names(client, acme, channel="sandbox") == []
    assert names(client, acme, q="ravi") == ["Ravi Kumar"]
    assert names(client, acme, q="KUMAR") == ["Ravi Kumar"]
    assert names(client, acme, q="+1 (415) 555-0101") == ["Ravi Kumar"]  # by its digits
    assert names(client, acme, q="55501") == ["Bob 100%_sure", "Ravi Kumar"]
    assert names(client, acme, q="EXAMPLE.COM") == ["Ana García"]
    assert names(client, acme, q="example.") == ["Ana García", "Bob 100%_sure"]
    # LIKE's wildcards are the characters themselves.
    assert names(client, acme, q="%_") == ["Bob 100%_sure"]
    assert names(client, acme, q="R_vi") == []

    paused = client.post(f"/leads/{bob}/ai/pause", json={"reason": "on a call"}, headers=acme.agent)
    assert paused.status_code == 200
    lead = paused.json()
    assert (lead["ai_paused"], lead["ai_paused_reason"]) == (True, "on a call")
    assert lead["ai_paused_since"] == "2026-11-26T10:00:00Z"
    assert lead["needs_person"] is False  # paused by a person, not handed off by the AI
    assert names(client, acme, ai_paused="true") == ["Bob 100%_sure"]
    assert names(client, acme, ai_paused="false") == ["Ana García", "Ravi Kumar"]
    assert names(client, acme, needs_person="true") == []
    assert names(client, acme, needs_person="false") == [
        "Ana García",
        "Bob 100%_sure",
        "Ravi Kumar",
    ]
    assert names(client, acme, channel="email", ai_paused="false") == ["Ana García"]

    client.patch(f"/leads/{bob}", json={"stage": "Qualified"}, headers=acme.agent)
    assert names(client, acme, stage="qualified") == ["Bob 100%_sure"]
    assert names(client, acme, stage="Qualified", q="ravi") == []
    assert names(client, globex, q="ravi", channel="wa_cloud") == ["Ravi Kumar"]

    resumed = client.post(f"/leads/{bob}/ai/resume", headers=acme.agent).json()
    assert (resumed["ai_paused"], resumed["ai_paused_reason"]) == (False, None)
    assert resumed["ai_paused_since"] is None


def test_a_bad_filter_value_is_refused_naming_the_filter(
    client: TestClient, acme: Tenant, globex: Tenant, session_factory: sessionmaker[Session]
) -> None:
    theirs = make_user(session_factory, globex, "g@globex.test")
    their_stage = client.get("/pipelines", headers=globex.agent).json()[0]["stages"][0]["id"]
    cases = {
        # Like any id the company does not have, another company's stage or user is a 404.
        "stage": (["Dancing", their_stage], 404),
        "assigned_to": ([theirs, str(uuid.uuid4())], 404),
        "assigned_to ": (["not-a-user", "me"], 422),
        "channel": (["pigeon"], 422),
        "ai_paused": (["maybe"], 422),
        "needs_person": (["perhaps"], 422),
        "q": ([""], 422),
    }
    for key, (values, status) in cases.items():
        field = key.strip()
        for value in values:
            response = client.get("/leads", params={field: value}, headers=acme.agent)
            assert response.status_code == status, (field, value, response.text)
            body = response.json()
            named = body.get("field") or [e["field"] for e in body.get("errors", [])]
            assert field in named, (field, value, body)
            assert body["detail"].startswith(field) or body["error"] == "stage_not_found"
            assert theirs not in response.text or field == "assigned_to"


def test_assigning_a_lead_to_a_user_of_the_company(
    client: TestClient, acme: Tenant, globex: Tenant, session_factory: sessionmaker[Session]
) -> None:
    priya = make_user(session_factory, acme, "priya@acme.test")
    other = make_user(session_factory, globex, "priya@globex.test")
    lead = create_lead(client, acme, "Ravi", ("wa_cloud", "+14155550101"))
    create_lead(client, acme, "Ana", ("email", "ana@example.com"))

    assigned = client.patch(f"/leads/{lead}", json={"assigned_to": priya}, headers=acme.agent)
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assigned_to"] == priya
    assert names(client, acme, assigned_to=priya) == ["Ravi"]
    assert names(client, acme, assigned_to="none") == ["Ana"]
    again = client.patch(f"/leads/{lead}", json={"assigned_to": priya}, headers=acme.agent)
    assert again.status_code == 200

    # Another company's user is no user of Acme's: not found, and nothing changes.
    refused = client.patch(f"/leads/{lead}", json={"assigned_to": other}, headers=acme.agent)
    assert refused.status_code == 404, refused.text
    assert (refused.json()["error"], refused.json()["field"]) == ("user_not_found", "assigned_to")
    assert other in refused.json()["detail"]
    assert (
        client.patch(
            f"/leads/{lead}", json={"assigned_to": "priya"}, headers=acme.agent
        ).status_code
        == 422
    )
    assert client.get(f"/leads/{lead}", headers=acme.agent).json()["assigned_to"] == priya
    # ... nor can Globex assign Acme's lead (it does not exist for Globex).
    assert (
        client.patch(f"/leads/{lead}", json={"assigned_to": other}, headers=globex.agent)
    ).status_code == 404

    unassigned = client.patch(f"/leads/{lead}", json={"assigned_to": None}, headers=acme.agent)
    assert unassigned.json()["assigned_to"] is None
    events = client.get(f"/leads/{lead}/events", headers=acme.agent).json()["items"]
    assigned_events = [e for e in events if e["type"] == "LeadAssigned"]
    assert [e["data"] for e in assigned_events] == [
        {"from": None, "to": priya},
        {"from": priya, "to": None},
    ]
    assert assigned_events[0]["actor"].startswith("api_key:")

    # Deleting the user unassigns its leads.
    client.patch(f"/leads/{lead}", json={"assigned_to": priya}, headers=acme.agent)
    with session_factory() as session:
        session.execute(delete(User).where(User.id == uuid.UUID(priya)))
        session.commit()
    assert client.get(f"/leads/{lead}", headers=acme.agent).json()["assigned_to"] is None


def test_assigned_to_me_lists_the_leads_of_the_person_the_key_belongs_to(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    priya = make_user(session_factory, acme, "priya@acme.test")
    made = client.post("/api-keys", json={"user_id": priya}, headers=acme.admin)
    assert made.status_code == 201, made.text
    hers = {"Authorization": f"Bearer {made.json()['key']}"}
    lead = create_lead(client, acme, "Ravi", ("wa_cloud", "+14155550101"))
    create_lead(client, acme, "Ana", ("email", "ana@example.com"))
    client.patch(f"/leads/{lead}", json={"assigned_to": priya}, headers=acme.agent)

    mine = client.get("/leads", params={"assigned_to": "me"}, headers=hers)
    assert mine.status_code == 200, mine.text
    assert [item["name"] for item in mine.json()["items"]] == ["Ravi"]
    # A key that belongs to no one has no "me": a 422 that says what to do instead.
    nobody = client.get("/leads", params={"assigned_to": "me"}, headers=acme.agent)
    assert nobody.status_code == 422
    assert nobody.json()["field"] == "assigned_to"
    assert "--user" in nobody.json()["detail"]


def test_a_query_parameter_the_route_does_not_take_is_a_422_naming_it(
    client: TestClient, acme: Tenant
) -> None:
    create_lead(client, acme, "Ravi", ("wa_cloud", "+14155550101"))
    for path, parameter in [
        ("/leads", "ai_pasued"),
        ("/leads", "needs_persons"),
        ("/pipelines", "stage"),
        ("/kb/documents", "q"),
        ("/ai/usage", "lead"),
        ("/queue/stats", "everything"),
    ]:
        response = client.get(path, params={parameter: "true"}, headers=acme.agent)
        assert response.status_code == 422, (path, response.text)
        body = response.json()
        assert body["error"] == "invalid_input"
        assert body["errors"][0]["field"] == parameter
        assert body["detail"].startswith(f"{parameter}: not a parameter of {path}")
    # Named together with a bad value of a known one; known ones still work.
    response = client.get("/leads?limit=2&stage=New&sort=name", headers=acme.agent)
    assert response.status_code == 422
    assert "limit, needs_person, offset, q, stage" in response.json()["detail"]
    assert client.get("/leads?limit=2&stage=New", headers=acme.agent).json()["total"] == 1
    # A caller without a valid key learns nothing about the route's parameters: 401 first.
    anonymous = client.get("/leads", params={"api_key": acme.agent_key})
    assert anonymous.status_code == 401
    # The providers' webhooks keep taking what the provider sends.
    verify = client.get("/webhooks/whatsapp", params={"hub.mode": "x", "extra": "1"})
    assert verify.status_code != 422
