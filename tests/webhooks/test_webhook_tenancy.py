"""Another company's subscriptions and deliveries do not exist for the caller (docs/webhooks.md
1; the route matrix in tests/tenancy/test_isolation.py covers every route too)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.support import FakeClock, Tenant, post_inbound
from tests.webhooks.support import deliveries, subscribe, tick


def test_globex_cannot_see_or_touch_acmes_subscriptions_or_deliveries(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> None:
    acmes = subscribe(client, acme, "https://hooks.acme.example/shvya")
    globexs = subscribe(client, globex, "https://hooks.globex.example/shvya")
    post_inbound(client, acme)
    clock.advance(seconds=1)
    assert tick(session_factory, clock) == 1  # acme's event, for acme's subscription only
    [delivery] = deliveries(client, acme, acmes["id"])
    assert deliveries(client, globex, globexs["id"]) == []

    listed = client.get("/webhook-subscriptions", headers=globex.admin).json()
    assert [s["id"] for s in listed["items"]] == [globexs["id"]]
    base = f"/webhook-subscriptions/{acmes['id']}"
    for method, path, body in (
        ("GET", base, None),
        ("PATCH", base, {"active": False}),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/deliveries/{delivery['id']}/redeliver", None),
        # Its own subscription's path with acme's delivery id: still not found.
        (
            "POST",
            f"/webhook-subscriptions/{globexs['id']}/deliveries/{delivery['id']}/redeliver",
            None,
        ),
        ("DELETE", base, None),
    ):
        response = client.request(method, path, json=body, headers=globex.admin)
        assert response.status_code == 404, (method, path, response.text)
    after = client.get(base, headers=acme.admin).json()
    assert after["active"] is True
    assert deliveries(client, acme, acmes["id"]) == [delivery]
