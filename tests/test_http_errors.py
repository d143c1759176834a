"""Answers the framework gives for a request no route takes, in SHVYA's error shape."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support import Tenant


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        # Two routes share each of these paths; Starlette named only the first one's methods.
        ("DELETE", "/leads", "GET, POST"),
        ("PUT", "/leads/00000000-0000-0000-0000-000000000001", "GET, PATCH"),
        ("PUT", "/api-keys", "GET, POST"),
        ("GET", "/api-keys/00000000-0000-0000-0000-000000000001", "DELETE"),
        ("PATCH", "/webhooks/whatsapp", "GET, POST"),
    ],
)
def test_405_lists_every_method_the_path_allows(
    client: TestClient, acme: Tenant, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, headers=acme.admin)
    assert response.status_code == 405, response.text
    assert response.headers["Allow"] == allowed
    body = response.json()
    assert body["error"] == "method_not_allowed"
    assert method in body["detail"] and allowed.split(", ")[0] in body["detail"]
    for allowed_method in allowed.split(", "):
        answered = client.request(allowed_method, path, headers=acme.admin)
        assert answered.status_code != 405, (allowed_method, answered.text)
