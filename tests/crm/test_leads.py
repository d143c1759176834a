from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.crm.models import Lead
from shvya.jobs.models import Job
from tests.support import FakeClock, Tenant, post_inbound


def create_lead(client: TestClient, tenant: Tenant, **body: Any) -> Any:
    return client.post("/leads", json=body, headers=tenant.agent)


def test_pipelines_list_the_default_stages_in_order(client: TestClient, acme: Tenant) -> None:
    response = client.get("/pipelines", headers=acme.agent)
    assert response.status_code == 200
    [pipeline] = response.json()
    assert pipeline["is_default"] is True
    assert [s["name"] for s in pipeline["stages"]] == [
        "New",
        "Qualified",
        "Nurture",
        "Converted",
        "Lost",
    ]
    assert [s["position"] for s in pipeline["stages"]] == [0, 1, 2, 3, 4]


def test_create_lead_without_message_enqueues_nothing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    response = create_lead(
        client,
        acme,
        name="Rahul",
        contacts=[
            {"channel": "wa_cloud", "value": "+44 20 7946 0958"},
            {"channel": "email", "value": "Rahul@Example.com"},
        ],
        stage="qualified",
        attributes={"budget": 5000, "source": "expo"},
    )
    assert response.status_code == 201, response.text
    lead = response.json()
    assert lead["stage"]["name"] == "Qualified"
    assert lead["attributes"] == {"budget": 5000, "source": "expo"}
    assert {(c["channel"], c["value"]) for c in lead["contacts"]} == {
        ("wa_cloud", "+442079460958"),
        ("email", "rahul@example.com"),
    }
    events = client.get(f"/leads/{lead['id']}/events", headers=acme.agent).json()["items"]
    assert [e["type"] for e in events] == ["LeadCreated"]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_contact_of_another_lead_is_409_with_that_leads_id(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    owner = post_inbound(client, acme, phone="+14155550100").json()["lead_id"]
    response = create_lead(
        client,
        acme,
        name="Copy",
        contacts=[
            {"channel": "email", "value": "new@example.com"},
            {"channel": "wa_cloud", "value": "+1 415 555 0100"},
        ],
    )
    assert response.status_code == 409
    assert response.json()["error"] == "contact_taken"
    assert response.json()["lead_id"] == owner
    with session_factory() as session:  # the half-made lead was rolled back with its contacts
        assert session.scalar(select(func.count()).select_from(Lead)) == 1
    # the email it tried to claim is still free
    assert (
        create_lead(
            client, acme, contacts=[{"channel": "email", "value": "new@example.com"}]
        ).status_code
        == 201
    )


def test_same_contact_in_another_company_is_a_different_lead(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    contacts = [{"channel": "wa_cloud", "value": "+14155550100"}]
    first = create_lead(client, acme, contacts=contacts)
    second = create_lead(client, globex, contacts=contacts)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


def test_create_lead_rejects_bad_contacts_and_unknown_stage(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    bad_phone = create_lead(client, acme, contacts=[{"channel": "sms", "value": "12ab"}])
    assert bad_phone.status_code == 422
    assert "contacts[0].value" in bad_phone.json()["detail"]
    unknown = create_lead(client, acme, stage="Negotiation")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "stage_not_found"
    assert create_lead(client, acme, id="x").status_code == 422
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 0


def test_list_leads_newest_first_with_pagination_and_stage_filter(
    client: TestClient, acme: Tenant, clock: FakeClock
) -> None:
    ids = []
    for index in range(5):
        clock.advance(seconds=1)
        ids.append(post_inbound(client, acme, phone=f"+1415555010{index}").json()["lead_id"])
    page = client.get("/leads?limit=2&offset=1", headers=acme.agent).json()
    assert page["total"] == 5
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [lead["id"] for lead in page["items"]] == [ids[3], ids[2]]

    moved = client.patch(f"/leads/{ids[0]}", json={"stage": "Nurture"}, headers=acme.agent)
    assert moved.status_code == 200
    nurture = client.get("/leads?stage=nurture", headers=acme.agent).json()
    assert [lead["id"] for lead in nurture["items"]] == [ids[0]]
    assert client.get("/leads?stage=New", headers=acme.agent).json()["total"] == 4


def test_limit_is_clamped_and_absurd_values_are_422(client: TestClient, acme: Tenant) -> None:
    assert client.get("/leads", headers=acme.agent).json()["limit"] == 50
    assert client.get("/leads?limit=500", headers=acme.agent).json()["limit"] == 200
    for query in ("limit=0", "limit=-1", "limit=1000000000", "offset=-1", "offset=99999999999"):
        response = client.get(f"/leads?{query}", headers=acme.agent)
        assert response.status_code == 422, query
        assert response.json()["error"] == "invalid_input"


def test_patch_changes_stage_with_event_and_merges_attributes(
    client: TestClient, acme: Tenant
) -> None:
    lead = create_lead(client, acme, attributes={"city": "Pune", "budget": 100}).json()
    stages = {
        s["name"]: s["id"] for s in client.get("/pipelines", headers=acme.agent).json()[0]["stages"]
    }
    response = client.patch(
        f"/leads/{lead['id']}",
        json={
            "stage": stages["Qualified"],
            "priority": 5,
            "attributes": {"budget": 250, "city": None, "team": "B2B"},
        },
        headers=acme.agent,
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["stage"] == {"id": stages["Qualified"], "name": "Qualified"}
    assert updated["priority"] == 5
    assert updated["attributes"] == {"budget": 250, "team": "B2B"}
    events = client.get(f"/leads/{lead['id']}/events", headers=acme.agent).json()["items"]
    assert [e["type"] for e in events] == ["LeadCreated", "StageChanged", "LeadUpdated"]
    assert events[1]["data"] == {
        "from": {"id": stages["New"], "name": "New"},
        "to": {"id": stages["Qualified"], "name": "Qualified"},
    }
    assert events[1]["actor"].startswith("api_key:")

    # the same stage again is not a change
    again = client.patch(f"/leads/{lead['id']}", json={"stage": "qualified"}, headers=acme.agent)
    assert again.status_code == 200
    events = client.get(f"/leads/{lead['id']}/events", headers=acme.agent).json()["items"]
    assert [e["type"] for e in events].count("StageChanged") == 1


def test_patch_rejects_protected_unknown_and_null_fields_and_changes_nothing(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    lead = create_lead(client, acme, name="Keep", attributes={"a": 1}).json()
    bad_bodies = [
        {"company_id": str(globex.company_id)},
        {"id": "00000000-0000-0000-0000-000000000000"},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"ai_paused": True},
        {"pipeline_id": lead["pipeline_id"]},
        {"name": "Changed", "score": 99},
        {"consent": True},
        {"stage": None},
        {"priority": None},
        {"attributes": None},
        {"priority": 10**9},
        {"attributes": {"deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}},
        {"attributes": {"bad": "nul\u0000"}},
        {"name": "x" * 201},
    ]
    for body in bad_bodies:
        response = client.patch(f"/leads/{lead['id']}", json=body, headers=acme.agent)
        assert response.status_code == 422, (body, response.text)
    after = client.get(f"/leads/{lead['id']}", headers=acme.agent).json()
    assert after == lead


def test_patch_name_null_clears_it(client: TestClient, acme: Tenant) -> None:
    lead = create_lead(client, acme, name="Temp").json()
    response = client.patch(f"/leads/{lead['id']}", json={"name": None}, headers=acme.agent)
    assert response.status_code == 200
    assert response.json()["name"] is None


def test_unknown_lead_is_404(client: TestClient, acme: Tenant) -> None:
    missing = "01900000-0000-7000-8000-000000000000"
    for path in (f"/leads/{missing}", f"/leads/{missing}/messages", f"/leads/{missing}/events"):
        response = client.get(path, headers=acme.agent)
        assert response.status_code == 404
        assert response.json()["error"] == "lead_not_found"
    assert client.get("/leads/not-a-uuid", headers=acme.agent).status_code == 422
