"""The people of a company and their keys: a key bound to a user acts as `user:<id>`."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.events.models import Event
from tests.support import Tenant


def add_user(client: TestClient, tenant: Tenant, email: str, role: str = "agent") -> dict[str, str]:
    response = client.post(
        "/users", json={"email": email, "name": "Asha Rao", "role": role}, headers=tenant.admin
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def test_an_admin_adds_a_person_and_gives_them_a_key_that_acts_as_them(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    user = add_user(client, acme, "Asha.Rao@Acme.example", role="supervisor")
    assert (user["email"], user["role"]) == ("asha.rao@acme.example", "supervisor")
    listed = client.get("/users", headers=acme.admin).json()
    assert [u["id"] for u in listed] == [user["id"]]

    made = client.post(
        "/api-keys", json={"user_id": user["id"], "name": "Asha's laptop"}, headers=acme.admin
    )
    assert made.status_code == 201, made.text
    assert (made.json()["role"], made.json()["user_id"]) == ("supervisor", user["id"])
    me = client.get("/me", headers={"Authorization": f"Bearer {made.json()['key']}"}).json()
    assert (me["user_id"], me["role"]) == (user["id"], "supervisor")
    # What the key does is hers: a lead it creates names her.
    created = client.post(
        "/leads",
        json={"name": "Ravi", "contacts": [{"channel": "wa_cloud", "value": "+14155550100"}]},
        headers={"Authorization": f"Bearer {made.json()['key']}"},
    )
    assert created.status_code == 201, created.text
    with session_factory() as session:
        actor = session.scalar(select(Event.actor).where(Event.type == "LeadCreated"))
    assert actor == f"user:{user['id']}"

    # A key without a user still works, named by itself.
    plain = client.get("/me", headers=acme.agent).json()
    assert plain["user_id"] is None


def test_users_and_their_keys_refuse_what_does_not_fit(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    user = add_user(client, acme, "asha@acme.example")
    again = client.post(
        "/users",
        json={"email": "ASHA@acme.example", "name": "Asha", "role": "admin"},
        headers=acme.admin,
    )
    assert again.status_code == 409
    assert again.json()["error"] == "user_exists"
    # The same address in another company is another person.
    add_user(client, globex, "asha@acme.example")

    bad_email = client.post(
        "/users", json={"email": "asha", "name": "Asha", "role": "agent"}, headers=acme.admin
    )
    assert bad_email.status_code == 422
    assert bad_email.json()["errors"][0]["field"] == "email"
    by_agent = client.post(
        "/users", json={"email": "x@acme.example", "name": "X", "role": "agent"}, headers=acme.agent
    )
    assert by_agent.status_code == 403

    other_role = client.post(
        "/api-keys", json={"user_id": user["id"], "role": "admin"}, headers=acme.admin
    )
    assert other_role.status_code == 422
    assert "user's role (agent)" in other_role.json()["detail"]
    neither = client.post("/api-keys", json={"name": "x"}, headers=acme.admin)
    assert neither.status_code == 422
    assert "give a role, or the user_id" in neither.json()["detail"]
    null_role = client.post(
        "/api-keys", json={"user_id": user["id"], "role": None}, headers=acme.admin
    )
    assert null_role.status_code == 422
    assert "role cannot be null" in null_role.json()["detail"]
    foreign = client.post("/api-keys", json={"user_id": user["id"]}, headers=globex.admin)
    assert foreign.status_code == 404
    assert foreign.json()["error"] == "user_not_found"
