"""API keys (docs/reliability.md A3) and what each role may do (A2)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.db.models import ApiKey, Base
from tests.support import FakeClock, Tenant


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert response.json()["detail"]


def create_key(client: TestClient, tenant: Tenant, role: str, name: str = "") -> dict[str, Any]:
    response = client.post("/api-keys", json={"role": role, "name": name}, headers=tenant.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def count_keys(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def secret_part(raw_key: str) -> str:
    """The part of `shvya_<prefix>_<secret>` that is not shown anywhere after creation."""
    return raw_key.rsplit("_", 1)[1]


# --- API keys: who is calling (A3) --------------------------------------------------------------


def test_missing_authorization_is_401(client: TestClient, acme: Tenant) -> None:
    for path in ("/me", "/leads", "/pipelines", "/api-keys"):
        assert_unauthorized(client.get(path))
    assert_unauthorized(client.post("/inbound-message", json={}))


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer ", id="bearer-empty"),
        pytest.param("Bearer", id="bearer-no-key"),
        pytest.param("Basic {key_b64}", id="basic-scheme"),
        pytest.param("Token {key}", id="token-scheme"),
        pytest.param("{key}", id="no-scheme"),
        pytest.param("Bearer not-a-key", id="malformed"),
        pytest.param("Bearer shvya_", id="prefix-only"),
        pytest.param("Bearer shvya__", id="empty-parts"),
        pytest.param("Bearer shvya_a_b_c", id="four-parts"),
        pytest.param("Bearer {key}x", id="key-with-extra-char"),
        pytest.param("Bearer {key_upper}", id="key-upper-cased"),
        pytest.param("Bearer " + "shvya_" + "a" * 5000 + "_b", id="very-long"),
        pytest.param("Bearer shvya_0123456789ab_" + "0" * 48, id="unknown-valid-shape"),
        pytest.param("Bearer {prefix}_" + "0" * 48, id="real-prefix-wrong-secret"),
        pytest.param("Bearer {key} {key}", id="two-keys"),
    ],
)
def test_bad_authorization_header_is_401(
    client: TestClient, acme: Tenant, authorization: str
) -> None:
    key = acme.admin_key
    header = authorization.format(
        key=key,
        key_b64=base64.b64encode(f"{key}:".encode()).decode(),
        key_upper=key.upper(),
        prefix=key.rsplit("_", 1)[0],
    )
    assert_unauthorized(client.get("/me", headers={"Authorization": header}))
    assert_unauthorized(client.get("/leads", headers={"Authorization": header}))


def test_non_ascii_key_is_401_not_500(client: TestClient, acme: Tenant) -> None:
    header = ("Bearer shvya_" + "é" * 12 + "_" + "ü" * 48).encode("latin-1")
    response = client.get("/me", headers={b"Authorization": header})  # type: ignore[dict-item]
    assert_unauthorized(response)


def test_the_key_works_in_the_authorization_header(client: TestClient, acme: Tenant) -> None:
    for scheme in ("Bearer", "bearer"):  # RFC 9110: the scheme is case-insensitive
        response = client.get("/me", headers={"Authorization": f"{scheme} {acme.agent_key}"})
        assert response.status_code == 200, response.text
        assert response.json()["role"] == "agent"


def test_the_key_is_not_accepted_anywhere_but_the_authorization_header(
    client: TestClient, acme: Tenant
) -> None:
    key = acme.admin_key
    for name in ("api_key", "key", "access_token", "token", "apikey"):
        assert_unauthorized(client.get("/me", params={name: key}))
        assert_unauthorized(client.get("/api-keys", params={name: key}))
    assert_unauthorized(client.get("/me", headers={"X-API-Key": key}))
    client.cookies.set("api_key", key)
    assert_unauthorized(client.get("/me"))


def test_revoked_key_is_401_at_once(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    created = create_key(client, acme, "agent", "laptop")
    assert client.get("/me", headers=bearer(created["key"])).status_code == 200

    revoked = client.delete(f"/api-keys/{created['id']}", headers=acme.admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["id"] == created["id"]
    assert revoked.json()["revoked_at"] is not None

    assert_unauthorized(client.get("/me", headers=bearer(created["key"])))
    assert_unauthorized(
        client.post(
            "/inbound-message",
            json={"channel": "wa_cloud", "from": "+14155550100", "text": "hi"},
            headers=bearer(created["key"]),
        )
    )
    listed = {k["id"]: k for k in client.get("/api-keys", headers=acme.admin).json()}
    assert listed[created["id"]]["revoked_at"] is not None
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Base.metadata.tables["leads"])) == 0
    # The other keys keep working.
    assert client.get("/me", headers=acme.agent).status_code == 200


def test_another_companys_key_id_cannot_be_revoked(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    [globex_agent] = [
        k for k in client.get("/api-keys", headers=globex.admin).json() if k["role"] == "agent"
    ]
    response = client.delete(f"/api-keys/{globex_agent['id']}", headers=acme.admin)
    assert response.status_code == 404, response.text
    assert client.get("/me", headers=globex.agent).status_code == 200


def test_twenty_failed_authentications_in_a_minute_then_429_with_retry_after(
    client: TestClient, acme: Tenant
) -> None:
    bad = bearer("shvya_0123456789ab_" + "0" * 48)
    for attempt in range(20):
        response = client.get("/me", headers=bad)
        assert response.status_code == 401, (attempt, response.text)

    for _ in range(80):  # the rest of "100 bad keys a minute"
        limited = client.get("/me", headers=bad)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"] == "too_many_requests"
        retry_after = limited.headers["Retry-After"]
        assert re.fullmatch(r"[0-9]+", retry_after), retry_after
        assert 1 <= int(retry_after) <= 61
    # Counted per key prefix: another prefix, or no key at all, is not blocked by this one.
    assert_unauthorized(client.get("/me", headers=bearer(acme.admin_key + "0")))
    assert_unauthorized(client.get("/me"))
    # A correct key is never refused (below: even one with the blocked prefix).
    assert client.get("/me", headers=acme.admin).status_code == 200


def test_wrong_keys_never_block_the_correct_key_of_their_prefix(
    client: TestClient, acme: Tenant
) -> None:
    """Behind a reverse proxy every client has the proxy's address: a script repeating a
    stale key must not lock the company's working integrations out (docs/reliability.md A3)."""
    wrong = bearer(acme.admin_key.rsplit("_", 1)[0] + "_" + "0" * 48)  # right prefix
    statuses = [client.get("/me", headers=wrong).status_code for _ in range(25)]
    assert statuses == [401] * 20 + [429] * 5
    me = client.get("/me", headers=acme.admin)
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "admin"
    assert client.get("/leads", headers=acme.agent).status_code == 200
    assert client.get("/me", headers=wrong).status_code == 429


def test_wrong_keys_of_one_prefix_do_not_block_another_prefix(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    acme_wrong = bearer(acme.admin_key.rsplit("_", 1)[0] + "_" + "0" * 48)
    globex_wrong = bearer(globex.agent_key.rsplit("_", 1)[0] + "_" + "0" * 48)
    for _ in range(21):
        client.get("/me", headers=acme_wrong)
    assert client.get("/me", headers=acme_wrong).status_code == 429
    assert_unauthorized(client.get("/me", headers=globex_wrong))
    assert client.get("/me", headers=globex.agent).status_code == 200


def proxied_client(
    database_url: str, engine: Engine, clock: FakeClock, *, peer: str, trusted: str = ""
) -> TestClient:
    settings = Settings(
        database_url=database_url, auth_failures_per_minute=3, trusted_proxies=trusted
    )
    return TestClient(create_app(settings, engine=engine, clock=clock), client=(peer, 50000))


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    database_url: str, engine: Engine, clock: FakeClock, acme: Tenant
) -> None:
    with proxied_client(
        database_url, engine, clock, peer="203.0.113.9", trusted="10.0.0.0/8"
    ) as client:
        wrong = bearer("shvya_0123456789ab_" + "0" * 48)
        for spoofed in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            response = client.get("/me", headers={**wrong, "X-Forwarded-For": spoofed})
            assert_unauthorized(response)
        # Each attempt claimed another address; all three counted against the peer's own.
        blocked = client.get("/me", headers={**wrong, "X-Forwarded-For": "198.51.100.4"})
        assert blocked.status_code == 429, blocked.text


def test_x_forwarded_for_names_the_client_behind_a_trusted_proxy(
    database_url: str, engine: Engine, clock: FakeClock, acme: Tenant
) -> None:
    with proxied_client(
        database_url, engine, clock, peer="10.0.0.5", trusted="10.0.0.0/8, 192.0.2.7"
    ) as client:
        wrong = bearer("shvya_0123456789ab_" + "0" * 48)
        # What the client wrote (left) is not read: the trusted proxies' entries (right) are.
        noisy = {**wrong, "X-Forwarded-For": "1.1.1.1, 198.51.100.1, 192.0.2.7"}
        for _ in range(3):
            assert_unauthorized(client.get("/me", headers=noisy))
        assert client.get("/me", headers=noisy).status_code == 429
        # Another client behind the same proxy is another address: not blocked.
        other = {**wrong, "X-Forwarded-For": "198.51.100.2"}
        assert_unauthorized(client.get("/me", headers=other))
        # A blocked client's correct key still works.
        me = client.get("/me", headers={**acme.agent, "X-Forwarded-For": "198.51.100.1"})
        assert me.status_code == 200, me.text


def test_trusted_proxies_must_be_addresses_or_networks(database_url: str) -> None:
    from pydantic import ValidationError

    assert Settings(database_url=database_url, trusted_proxies="10.0.0.1, ::1, 10.1.0.0/16")
    problem = re.escape("'proxy.local' is not an IP address or network")
    with pytest.raises(ValidationError, match=problem):
        Settings(database_url=database_url, trusted_proxies="10.0.0.1, proxy.local")


def test_the_companys_last_admin_key_cannot_be_revoked(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    [admin] = [
        k for k in client.get("/api-keys", headers=acme.admin).json() if k["role"] == "admin"
    ]
    refused = client.delete(f"/api-keys/{admin['id']}", headers=acme.admin)
    assert refused.status_code == 409, refused.text
    assert refused.json() == {
        "error": "last_admin_key",
        "detail": "this is the company's last active admin key; create another admin key first",
    }
    assert client.get("/me", headers=acme.admin).status_code == 200
    with session_factory() as session:
        events = session.scalars(
            select(Base.metadata.tables["events"].c.type).where(
                Base.metadata.tables["events"].c.type == "ApiKeyRevoked"
            )
        ).all()
    assert events == []

    # With a second admin key, either may go; then the one left is the last again.
    second = create_key(client, acme, "admin", "second")
    revoked = client.delete(f"/api-keys/{admin['id']}", headers=bearer(second["key"]))
    assert revoked.status_code == 200, revoked.text
    assert_unauthorized(client.get("/me", headers=acme.admin))
    itself = client.delete(f"/api-keys/{second['id']}", headers=bearer(second["key"]))
    assert itself.status_code == 409, itself.text
    assert client.get("/api-keys", headers=bearer(second["key"])).status_code == 200


def test_the_failure_limit_comes_from_settings(
    database_url: str, engine: Engine, clock: FakeClock, acme: Tenant
) -> None:
    settings = Settings(database_url=database_url, auth_failures_per_minute=3)
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        for _ in range(3):
            assert_unauthorized(client.get("/me", headers=bearer("nope")))
        assert client.get("/me", headers=bearer("nope")).status_code == 429


def test_forbidden_and_successful_requests_do_not_count_as_failed_authentications(
    client: TestClient, acme: Tenant
) -> None:
    for _ in range(25):
        assert client.get("/api-keys", headers=acme.agent).status_code == 403
        assert client.get("/me", headers=acme.agent).status_code == 200
    assert client.get("/api-keys", headers=acme.admin).status_code == 200


def test_the_raw_key_is_never_stored(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    created = create_key(client, acme, "supervisor", "ci")
    raw_keys = [acme.admin_key, acme.agent_key, created["key"]]
    assert client.get("/me", headers=bearer(created["key"])).status_code == 200  # used once

    with session_factory() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                dumped = repr(tuple(row))
                for raw in raw_keys:
                    assert raw not in dumped, table.name
                    assert secret_part(raw) not in dumped, table.name
        hashes = {
            prefix: key_hash
            for prefix, key_hash in session.execute(select(ApiKey.prefix, ApiKey.key_hash))
        }
    for raw in raw_keys:
        prefix = raw.rsplit("_", 1)[0]
        assert hashes[prefix] != raw
        assert secret_part(raw) not in hashes[prefix]
        assert re.fullmatch(r"[0-9a-f]{64}", hashes[prefix])


# --- roles: what each key may do (A2) -----------------------------------------------------------


@pytest.fixture
def supervisor(client: TestClient, acme: Tenant) -> dict[str, str]:
    created = create_key(client, acme, "supervisor", "team lead")
    assert created["role"] == "supervisor"
    me = client.get("/me", headers=bearer(created["key"]))
    assert me.status_code == 200 and me.json()["role"] == "supervisor"
    return bearer(created["key"])


@pytest.mark.parametrize("role", ["agent", "supervisor"])
def test_agent_and_supervisor_cannot_manage_keys(
    role: str,
    client: TestClient,
    acme: Tenant,
    supervisor: dict[str, str],
    session_factory: sessionmaker[Session],
) -> None:
    headers = acme.agent if role == "agent" else supervisor
    keys = client.get("/api-keys", headers=acme.admin).json()
    [admin_key] = [k for k in keys if k["role"] == "admin"]
    keys_before = count_keys(session_factory)

    listed = client.get("/api-keys", headers=headers)
    assert listed.status_code == 403, listed.text
    assert listed.json()["error"] == "forbidden"
    assert admin_key["prefix"] not in listed.text and admin_key["id"] not in listed.text

    for new_role in ("admin", "agent", "supervisor"):
        made = client.post("/api-keys", json={"role": new_role}, headers=headers)
        assert made.status_code == 403, made.text
        assert made.json()["error"] == "forbidden"
        assert "key" not in made.json()
    assert count_keys(session_factory) == keys_before

    for key in keys:
        revoked = client.delete(f"/api-keys/{key['id']}", headers=headers)
        assert revoked.status_code == 403, revoked.text
    assert client.get("/api-keys", headers=acme.admin).json() == keys
    assert client.get("/me", headers=acme.admin).status_code == 200


def test_agent_and_supervisor_keep_their_everyday_access(
    client: TestClient, acme: Tenant, supervisor: dict[str, str]
) -> None:
    for headers in (acme.agent, supervisor):
        assert client.get("/me", headers=headers).status_code == 200
        assert client.get("/leads", headers=headers).status_code == 200
        assert client.get("/pipelines", headers=headers).status_code == 200


def test_admin_manages_keys_and_a_new_key_is_shown_once(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    listed = client.get("/api-keys", headers=acme.admin)
    assert listed.status_code == 200
    assert sorted(k["role"] for k in listed.json()) == ["admin", "agent"]

    made = client.post("/api-keys", json={"role": "agent", "name": "phone"}, headers=acme.admin)
    assert made.status_code == 201, made.text
    created = made.json()
    assert created["key"].startswith(created["prefix"] + "_")
    assert (created["role"], created["name"], created["revoked_at"]) == ("agent", "phone", None)

    me = client.get("/me", headers=bearer(created["key"]))
    assert me.status_code == 200
    assert me.json()["key_id"] == created["id"]
    assert me.json()["role"] == "agent"
    assert me.json()["company_id"] == str(acme.company_id)

    listed = client.get("/api-keys", headers=acme.admin)
    assert [k["id"] for k in listed.json()][-1] == created["id"]
    for item in listed.json():
        assert "key" not in item
    for raw in (created["key"], acme.admin_key, acme.agent_key):
        assert raw not in listed.text
        assert secret_part(raw) not in listed.text

    revoked = client.delete(f"/api-keys/{created['id']}", headers=acme.admin)
    assert revoked.status_code == 200
    assert "key" not in revoked.json()
    assert secret_part(created["key"]) not in revoked.text
    assert count_keys(session_factory) == 3


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"role": "ADMIN"}, id="upper-case"),
        pytest.param({"role": " admin"}, id="leading-space"),
        pytest.param({"role": "admin "}, id="trailing-space"),
        pytest.param({"role": "owner"}, id="unknown-role"),
        pytest.param({"role": "root"}, id="root"),
        pytest.param({"role": "operator"}, id="operator-only-from-the-cli"),
        pytest.param({"role": ""}, id="empty"),
        pytest.param({"role": None}, id="null"),
        pytest.param({"role": ["admin"]}, id="list"),
        pytest.param({}, id="missing"),
        pytest.param({"role": "agent", "company_id": "{other_company}"}, id="company-id"),
        pytest.param({"role": "agent", "key": "shvya_chosen_" + "0" * 48}, id="chosen-key"),
        pytest.param({"role": "agent", "key_hash": "0" * 64}, id="key-hash"),
    ],
)
def test_invalid_key_requests_are_422_and_create_nothing(
    body: dict[str, Any],
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    if body.get("company_id"):
        body = {**body, "company_id": str(globex.company_id)}
    keys_before = count_keys(session_factory)
    response = client.post("/api-keys", json=body, headers=acme.admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert count_keys(session_factory) == keys_before
