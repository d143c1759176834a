"""GET and PATCH /company: what the AI may say and how it behaves, validated before stored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import Tenant


def patch(client: TestClient, tenant: Tenant, **body: Any) -> Any:
    return client.patch("/company", json=body, headers=tenant.admin)


def test_an_admin_sets_the_ai_settings_and_reads_them_back(
    client: TestClient, acme: Tenant
) -> None:
    response = patch(
        client,
        acme,
        timezone="Asia/Kolkata",
        currency="INR",
        default_language="hi",
        company_card={"about": "Acme sells CRM seats", "hours": "9 am to 6 pm", "facts": []},
        opt_out_keywords=["band karo", " mat bhejo ", "   ", "band karo"],
        handoff_message="Ek minute, hamari team aapse baat karegi.",
        ai_enabled=False,
        summary_every=3,
    )
    assert response.status_code == 200, response.text
    company = client.get("/company", headers=acme.agent).json()
    assert company["timezone"] == "Asia/Kolkata"
    assert company["currency"] == "INR"
    assert company["default_language"] == "hi"
    assert company["company_card"]["hours"] == "9 am to 6 pm"
    assert company["opt_out_keywords"] == ["band karo", "mat bhejo"]
    assert company["handoff_message"].startswith("Ek minute")
    assert (company["ai_enabled"], company["summary_every"]) == (False, 3)
    # Only what is sent changes; null puts the handoff message back to the default.
    assert patch(client, acme, handoff_message=None).json()["handoff_message"] is None
    assert client.get("/company", headers=acme.agent).json()["currency"] == "INR"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"currency": "RUPEES"}, "currency"),
        ({"currency": "inr"}, "capitals: INR"),
        ({"currency": "XYZ"}, "currency"),
        ({"default_language": "klingon"}, "default_language"),
        ({"summary_every": 0}, "summary_every"),
        ({"company_card": {"slogan": "x"}}, "company_card"),
        ({"opt_out_keywords": [""]}, "opt_out_keywords"),
        ({"ai_enabled": None}, "ai_enabled"),
    ],
)
def test_bad_settings_are_refused_with_the_field_to_fix(
    client: TestClient, acme: Tenant, body: dict[str, Any], field: str
) -> None:
    before = client.get("/company", headers=acme.agent).json()
    response = patch(client, acme, **body)
    assert response.status_code == 422, response.text
    assert field in response.text
    assert client.get("/company", headers=acme.agent).json() == before


def test_only_an_admin_changes_settings_and_each_company_sees_its_own(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    forbidden = client.patch("/company", json={"currency": "EUR"}, headers=acme.agent)
    assert forbidden.status_code == 403
    assert patch(client, globex, currency="EUR").status_code == 200
    assert client.get("/company", headers=acme.agent).json()["currency"] == "USD"
    assert client.get("/company", headers=globex.agent).json()["currency"] == "EUR"


def test_a_company_may_take_a_name_another_company_has(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    """Refusing it (`company_exists`) told one tenant another company's name."""
    before = client.get("/company", headers=globex.admin).json()
    renamed = client.patch("/company", json={"name": "Globex"}, headers=acme.admin)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Globex"
    assert client.get("/company", headers=globex.admin).json() == before
    acme_now = client.get("/company", headers=acme.admin).json()
    assert (acme_now["name"], acme_now["slug"]) == ("Globex", "acme")  # the slug stays
    assert before["slug"] == "globex"
    assert client.get("/me", headers=acme.agent).json()["company_name"] == "Globex"
    # Any case, any other company's name: the same answer as a name nobody has.
    for name in ("GLOBEX", "globex", "Initech"):
        response = client.patch("/company", json={"name": name}, headers=acme.admin)
        assert response.status_code == 200, response.text
