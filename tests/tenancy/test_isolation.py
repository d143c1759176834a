"""Another company's resources do not exist for the caller (OWASP API1, docs/reliability.md A1).

The matrix walks the live OpenAPI schema, so a route added later is covered automatically,
or fails here until its path parameters and request body are described below.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.db.models import Base
from shvya.webhooks.service import due_deliveries
from tests.support import T0, Tenant, post_inbound

HTTP_METHODS = ("get", "put", "post", "patch", "delete")


@dataclass(frozen=True)
class Victim:
    """Company B's resources that company A's key goes after."""

    tenant: Tenant
    lead_id: str
    job_id: str
    agent_key_id: str
    stage_ids: list[str]
    pipeline_ids: list[str]
    message_id: str
    suppression_id: str
    template_id: str
    document_id: str
    subscription_id: str
    delivery_id: str
    sequence_id: str


# Path parameter name -> the id of company B's resource of that kind. A route with a path
# parameter that is not here fails the matrix until it is added.
PATH_IDS: dict[str, Callable[[Victim], str]] = {
    "lead_id": lambda victim: victim.lead_id,
    "job_id": lambda victim: victim.job_id,
    "key_id": lambda victim: victim.agent_key_id,
    "message_id": lambda victim: victim.message_id,
    "suppression_id": lambda victim: victim.suppression_id,
    "template_id": lambda victim: victim.template_id,
    "document_id": lambda victim: victim.document_id,
    "stage_id": lambda victim: victim.stage_ids[0],
    "pipeline_id": lambda victim: victim.pipeline_ids[0],
    "subscription_id": lambda victim: victim.subscription_id,
    "delivery_id": lambda victim: victim.delivery_id,
    "sequence_id": lambda victim: victim.sequence_id,
}

# Routes where B's own request is not expected to succeed, with the check that proves B's
# resource was found all the same (so A's 404 still came from the company boundary).
FOUND_BUT_NOT_OK: dict[tuple[str, str], Callable[[Any], bool]] = {
    # B's message is text: found, but it has no media to fetch.
    ("GET", "/messages/{message_id}/media"): lambda r: r.json()["error"] != "message_not_found",
    # B's lead is found; B has no WhatsApp number connected to send on.
    ("POST", "/leads/{lead_id}/messages"): lambda r: r.json()["error"] == "channel_not_connected",
    # B's template is found; it is a WhatsApp template, which an email preview does not render.
    ("POST", "/templates/{template_id}/preview"): lambda r: (
        r.json()["error"] == "template_not_email"
    ),
}

# (METHOD, path) -> a minimal body that the route accepts, so validation cannot answer first
# and hide what authorization would do. The positive control below proves each is valid.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/leads/{lead_id}"): {"name": "x"},
    ("POST", "/leads/{lead_id}/messages"): {"text": "A person's answer"},
    ("POST", "/leads/{lead_id}/history"): {
        "messages": [{"direction": "in", "text": "hi", "sent_at": "2026-11-20T09:00:00Z"}]
    },
    ("PUT", "/pipelines/{pipeline_id}/stage-rules"): {
        "rules": [{"from": ["New"], "to": "Lost", "when": {"intent": ["not_interested"]}}]
    },
    ("PATCH", "/stages/{stage_id}"): {"ai_config": {"tone": "brief"}},
    ("PATCH", "/webhook-subscriptions/{subscription_id}"): {"events": ["StageChanged"]},
    ("PATCH", "/sequences/{sequence_id}"): {"name": "x"},
    ("POST", "/sequences/{sequence_id}/simulate"): {"stage": "New"},
}
# Bodies that name another of B's resources (filled in from the victim).
VICTIM_BODIES: dict[tuple[str, str], Callable[[Any], dict[str, Any]]] = {
    ("POST", "/templates/{template_id}/preview"): lambda victim: {"lead_id": victim.lead_id},
    ("POST", "/sequences/{sequence_id}/enrollments"): lambda victim: {"lead_ids": [victim.lead_id]},
}


def _routes_with_path_parameters() -> list[tuple[str, str]]:
    # A throwaway app: the routes are code, the same in every instance; no database is touched.
    schema = create_app(Settings(database_url="sqlite://")).openapi()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in HTTP_METHODS
        # A provider's webhook is not called with a company's key: its signature, made with
        # that account's own secret, is the credential (tests/channels/test_sms.py proves
        # another account's callback changes nothing).
        and not path.startswith("/webhooks/")
        # An id names a company's resource; other path parameters (an enum like the AI
        # `task`) name nothing that belongs to anyone.
        and any(
            p["in"] == "path" and p.get("schema", {}).get("format") == "uuid"
            for p in operation.get("parameters", [])
        )
    ]


ROUTES = _routes_with_path_parameters()


def test_the_matrix_covers_the_known_routes() -> None:
    """Guards against a walker that silently walks nothing."""
    assert {
        ("GET", "/leads/{lead_id}"),
        ("PATCH", "/leads/{lead_id}"),
        ("GET", "/leads/{lead_id}/messages"),
        ("GET", "/leads/{lead_id}/events"),
        ("DELETE", "/api-keys/{key_id}"),
    } <= set(ROUTES)


# --- snapshots ----------------------------------------------------------------------------------


def count_all_rows(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def company_rows(factory: sessionmaker[Session], company_id: uuid.UUID) -> dict[str, list[Any]]:
    """Every row the company owns, in every table, as plain tuples."""
    rows: dict[str, list[Any]] = {}
    with factory() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "companies":
                statement = select(table).where(table.c.id == company_id)
            elif "company_id" in table.c:
                statement = select(table).where(table.c.company_id == company_id)
            else:
                continue
            rows[table.name] = sorted((tuple(r) for r in session.execute(statement)), key=repr)
    return rows


def api_view(client: TestClient, victim: Victim) -> dict[str, Any]:
    """What company B sees of its own data through the API."""
    headers = victim.tenant.admin
    paths = (
        f"/leads/{victim.lead_id}",
        f"/leads/{victim.lead_id}/messages",
        f"/leads/{victim.lead_id}/events",
        "/leads",
        "/pipelines",
        "/api-keys",
        "/suppressions",
        "/templates",
        "/kb/documents",
        "/webhook-subscriptions",
    )
    view = {}
    for path in paths:
        response = client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        view[path] = response.json()
    return view


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def victim(client: TestClient, globex: Tenant, session_factory: sessionmaker[Session]) -> Victim:
    created = post_inbound(client, globex, phone="+14155550199", name="Globex lead")
    assert created.status_code == 201, created.text
    keys = client.get("/api-keys", headers=globex.admin)
    assert keys.status_code == 200, keys.text
    [agent_key] = [k for k in keys.json() if k["role"] == "agent"]
    pipelines = client.get("/pipelines", headers=globex.admin).json()
    suppression = client.post(
        "/suppressions",
        json={"channel": "email", "address": "blocked@globex.example"},
        headers=globex.admin,
    )
    assert suppression.status_code == 201, suppression.text
    template = client.post(
        "/templates",
        json={"name": "globex_followup", "body": "Hi {{1}}, still interested?"},
        headers=globex.admin,
    )
    assert template.status_code == 201, template.text
    document = client.post(
        "/kb/documents",
        json={"title": "Globex prices", "content": "The Globex plan costs 12,000 INR a year."},
        headers=globex.admin,
    )
    assert document.status_code == 201, document.text
    # A webhook subscription and a delivery of its lead's LeadCreated, fanned out a second later.
    subscription = client.post(
        "/webhook-subscriptions",
        json={"url": "https://hooks.globex.example/shvya", "events": ["LeadCreated"]},
        headers=globex.admin,
    )
    assert subscription.status_code == 201, subscription.text
    with session_factory() as session:
        due_deliveries(session, now=T0 + timedelta(seconds=1), limit=10)
        session.commit()
    delivery = client.get(
        f"/webhook-subscriptions/{subscription.json()['id']}/deliveries", headers=globex.admin
    ).json()["items"][0]
    sequence = client.post(
        "/sequences",
        json={"name": "Globex follow-up", "steps": [{"channel": "sandbox", "text": "Hi"}]},
        headers=globex.admin,
    )
    assert sequence.status_code == 201, sequence.text
    enrolled = client.post(
        f"/sequences/{sequence.json()['id']}/enrollments",
        json={"lead_ids": [created.json()["lead_id"]]},
        headers=globex.admin,
    )
    assert enrolled.status_code == 200, enrolled.text
    return Victim(
        tenant=globex,
        lead_id=created.json()["lead_id"],
        job_id=created.json()["job_id"],
        agent_key_id=agent_key["id"],
        stage_ids=[s["id"] for p in pipelines for s in p["stages"]],
        pipeline_ids=[p["id"] for p in pipelines],
        message_id=created.json()["message_id"],
        suppression_id=suppression.json()["id"],
        template_id=template.json()["id"],
        document_id=document.json()["document"]["id"],
        subscription_id=subscription.json()["id"],
        delivery_id=delivery["id"],
        sequence_id=sequence.json()["id"],
    )


@pytest.fixture
def own_lead(client: TestClient, acme: Tenant) -> dict[str, Any]:
    created = post_inbound(client, acme, phone="+14155550100", name="Acme lead")
    assert created.status_code == 201, created.text
    lead = client.get(f"/leads/{created.json()['lead_id']}", headers=acme.agent)
    assert lead.status_code == 200
    body: dict[str, Any] = lead.json()
    return body


# --- the matrix ---------------------------------------------------------------------------------


def _fill_path(path: str, operation: dict[str, Any], ids: dict[str, str]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", ids[parameter["name"]])
    return path


def _request(
    client: TestClient, method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str]
) -> Any:
    if body is None:
        return client.request(method, url, headers=headers)
    return client.request(method, url, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_another_companys_id_in_the_path_answers_404_and_changes_nothing(
    method: str,
    path: str,
    app: FastAPI,
    client: TestClient,
    acme: Tenant,
    victim: Victim,
    own_lead: dict[str, Any],
    session_factory: sessionmaker[Session],
) -> None:
    operation = app.openapi()["paths"][path][method.lower()]
    route = f"{method} {path}"

    victim_ids: dict[str, str] = {}
    unknown_ids: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path":
            if name not in PATH_IDS:
                pytest.fail(
                    f"{route}: no id of company B for path parameter {name!r}. Add it to "
                    f"PATH_IDS in {__name__} (create B's resource in the `victim` fixture), "
                    "so that this route is checked for cross-company access.",
                    pytrace=False,
                )
            victim_ids[name] = PATH_IDS[name](victim)
            unknown_ids[name] = str(uuid.uuid4())
        elif parameter.get("required"):
            pytest.fail(
                f"{route}: required {parameter['in']} parameter {name!r} has no value; "
                f"teach {__name__} what to send.",
                pytrace=False,
            )

    body = BODIES.get((method, path))
    if (method, path) in VICTIM_BODIES:
        body = VICTIM_BODIES[(method, path)](victim)
    if body is None and operation.get("requestBody", {}).get("required"):
        pytest.fail(
            f"{route}: needs a request body; add a minimal valid one to BODIES in {__name__}.",
            pytrace=False,
        )

    rows_before = count_all_rows(session_factory)
    victim_rows_before = company_rows(session_factory, victim.tenant.company_id)
    victim_view_before = api_view(client, victim)
    own_lead_before = client.get(f"/leads/{own_lead['id']}", headers=acme.agent).json()

    for role, headers in (("admin", acme.admin), ("agent", acme.agent)):
        foreign = _request(client, method, _fill_path(path, operation, victim_ids), body, headers)
        unknown = _request(client, method, _fill_path(path, operation, unknown_ids), body, headers)
        # B's id must look exactly like an id that never existed: same status, same error
        # code, same message, so the answer is no oracle for what exists elsewhere.
        assert foreign.status_code == unknown.status_code, (route, role, foreign.text)
        if role == "admin":
            assert foreign.status_code == 404, (route, role, foreign.text)
        else:
            assert foreign.status_code in (403, 404), (route, role, foreign.text)
        assert foreign.json()["error"] == unknown.json()["error"], (route, role)
        detail = foreign.json()["detail"]
        for name, value in victim_ids.items():
            detail = detail.replace(value, unknown_ids[name])
        assert detail == unknown.json()["detail"], (route, role)
        assert "Globex" not in foreign.text  # neither B's name nor its lead's name

    assert count_all_rows(session_factory) == rows_before, route
    assert company_rows(session_factory, victim.tenant.company_id) == victim_rows_before, route
    assert api_view(client, victim) == victim_view_before, route
    assert client.get(f"/leads/{own_lead['id']}", headers=acme.agent).json() == own_lead_before

    # Positive control: B's own admin key reaches the same resource with the same request, so
    # the 404 above came from the company boundary, not from a wrong id or an invalid body.
    own = _request(
        client, method, _fill_path(path, operation, victim_ids), body, victim.tenant.admin
    )
    found_check = FOUND_BUT_NOT_OK.get((method, path))
    if found_check is not None:
        assert found_check(own), (route, own.status_code, own.text)
    else:
        assert 200 <= own.status_code < 300, (route, own.status_code, own.text)


# --- another company's ids inside request bodies and query strings ------------------------------


def test_patching_own_lead_to_another_companys_stage_is_404_and_changes_nothing(
    client: TestClient,
    acme: Tenant,
    victim: Victim,
    own_lead: dict[str, Any],
    session_factory: sessionmaker[Session],
) -> None:
    rows_before = count_all_rows(session_factory)
    victim_rows_before = company_rows(session_factory, victim.tenant.company_id)
    for stage_id in victim.stage_ids:
        for body in ({"stage": stage_id}, {"stage": stage_id, "name": "renamed", "priority": 5}):
            response = client.patch(f"/leads/{own_lead['id']}", json=body, headers=acme.agent)
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "stage_not_found"
    assert client.get(f"/leads/{own_lead['id']}", headers=acme.agent).json() == own_lead
    events = client.get(f"/leads/{own_lead['id']}/events", headers=acme.agent).json()
    assert "StageChanged" not in [e["type"] for e in events["items"]]
    assert count_all_rows(session_factory) == rows_before
    assert company_rows(session_factory, victim.tenant.company_id) == victim_rows_before


def test_creating_a_lead_in_another_companys_stage_is_404_and_creates_nothing(
    client: TestClient, acme: Tenant, victim: Victim, session_factory: sessionmaker[Session]
) -> None:
    rows_before = count_all_rows(session_factory)
    victim_rows_before = company_rows(session_factory, victim.tenant.company_id)
    for stage_id in victim.stage_ids:
        body = {
            "name": "Sneaky",
            "stage": stage_id,
            "contacts": [{"channel": "wa_cloud", "value": "+14155550123"}],
        }
        response = client.post("/leads", json=body, headers=acme.agent)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "stage_not_found"
    assert count_all_rows(session_factory) == rows_before
    assert company_rows(session_factory, victim.tenant.company_id) == victim_rows_before
    assert client.get("/leads", headers=acme.agent).json()["total"] == 0


def test_a_message_from_another_companys_contact_makes_a_lead_of_ones_own(
    client: TestClient, acme: Tenant, victim: Victim, session_factory: sessionmaker[Session]
) -> None:
    victim_view_before = api_view(client, victim)
    victim_rows_before = company_rows(session_factory, victim.tenant.company_id)
    response = post_inbound(client, acme, phone="+14155550199", name="Same phone")
    assert response.status_code == 201, response.text
    assert response.json()["lead_created"] is True
    assert response.json()["lead_id"] != victim.lead_id
    assert company_rows(session_factory, victim.tenant.company_id) == victim_rows_before
    assert api_view(client, victim) == victim_view_before


def test_lead_lists_never_show_another_companys_leads(
    client: TestClient, acme: Tenant, victim: Victim, own_lead: dict[str, Any]
) -> None:
    for headers in (acme.admin, acme.agent):
        everything = client.get("/leads", params={"limit": 200}, headers=headers).json()
        assert [lead["id"] for lead in everything["items"]] == [own_lead["id"]]
        assert everything["total"] == 1
        # Both companies have a stage called "New" holding one lead each.
        by_name = client.get("/leads", params={"stage": "New"}, headers=headers).json()
        assert [lead["id"] for lead in by_name["items"]] == [own_lead["id"]]
        assert by_name["total"] == 1

    for stage_id in victim.stage_ids:
        response = client.get("/leads", params={"stage": stage_id}, headers=acme.agent)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "stage_not_found"
        assert victim.lead_id not in response.text

    theirs = client.get("/leads", headers=victim.tenant.agent).json()
    assert [lead["id"] for lead in theirs["items"]] == [victim.lead_id]


def test_pipelines_and_keys_lists_show_only_ones_own(
    client: TestClient, acme: Tenant, victim: Victim
) -> None:
    pipelines = client.get("/pipelines", headers=acme.agent)
    assert pipelines.status_code == 200
    assert len(pipelines.json()) == 1
    own_pipeline_ids = {p["id"] for p in pipelines.json()}
    own_stage_ids = {s["id"] for p in pipelines.json() for s in p["stages"]}
    assert own_pipeline_ids.isdisjoint(victim.pipeline_ids)
    assert own_stage_ids.isdisjoint(victim.stage_ids)
    assert len(own_stage_ids) == 5

    keys = client.get("/api-keys", headers=acme.admin)
    assert keys.status_code == 200
    assert victim.agent_key_id not in {k["id"] for k in keys.json()}
    assert len(keys.json()) == 2

    me = client.get("/me", headers=acme.agent).json()
    assert (me["company_id"], me["company_name"]) == (str(acme.company_id), "Acme")
