"""The installation's operator key: install-wide queue figures, and no company's data
(docs/reliability.md A15)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.db.models import Base
from tests.support import Tenant, make_operator_key, post_inbound


@pytest.fixture
def operator(session_factory: sessionmaker[Session]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_operator_key(session_factory)}"}


def count_all_rows(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def test_an_operator_key_reads_no_companys_data(
    client: TestClient,
    acme: Tenant,
    operator: dict[str, str],
    session_factory: sessionmaker[Session],
) -> None:
    lead_id = post_inbound(client, acme).json()["lead_id"]
    before = count_all_rows(session_factory)
    requests = [
        ("GET", "/me", None),
        ("GET", "/leads", None),
        ("GET", f"/leads/{lead_id}", None),
        ("GET", f"/leads/{lead_id}/messages", None),
        ("GET", "/company", None),
        ("GET", "/api-keys", None),
        ("POST", "/api-keys", {"role": "admin"}),
        ("GET", "/admin/dlq", None),
        ("GET", f"/jobs/{uuid.uuid4()}", None),
        ("POST", "/leads", {"name": "x", "contacts": [{"channel": "email", "value": "a@b.co"}]}),
        ("POST", "/inbound-message", {"channel": "wa_cloud", "from": "+14155550199", "text": "x"}),
    ]
    for method, path, body in requests:
        response = client.request(method, path, json=body, headers=operator)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"] == "forbidden"
        assert "operator key" in response.json()["detail"]
        assert lead_id not in response.text
    assert count_all_rows(session_factory) == before


def test_an_operator_key_is_not_a_failed_authentication(
    client: TestClient, operator: dict[str, str]
) -> None:
    for _ in range(25):
        assert client.get("/leads", headers=operator).status_code == 403
    assert client.get("/queue/stats", headers=operator).status_code == 200


def test_a_wrong_or_revoked_operator_key_is_401(
    client: TestClient, operator: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    from shvya.tenancy import service as tenancy
    from tests.support import T0

    raw = operator["Authorization"].removeprefix("Bearer ")
    wrong = {"Authorization": f"Bearer {raw.rsplit('_', 1)[0]}_{'0' * 48}"}
    assert client.get("/queue/stats", headers=wrong).status_code == 401
    with session_factory() as session:
        key = tenancy.find_operator_key(session, ref=raw.rsplit("_", 1)[0])
        assert key is not None
        tenancy.revoke_operator_key(session, key=key, now=T0)
        session.commit()
    assert client.get("/queue/stats", headers=operator).status_code == 401
