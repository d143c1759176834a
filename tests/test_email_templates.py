"""Email templates: Jinja2 in a sandbox with the lead's fields; a missing field is an error."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya.templates.rendering import (
    RenderedEmail,
    TemplateVariableMissing,
    render_email_template,
)
from tests.support import Tenant

# Rendering a template is the same on either database.
pytestmark = pytest.mark.one_database

TEXT = (
    "Hello {{ first_name }},\n"
    "{{ company_name }} has your {{ custom.product }} quote ({{ stage }}).\n"
    "We will write to {{ email }}.\n"
)
HTML = "<p>Hello {{ name }} of {{ company.name }}</p><p>{{ custom.product }}</p>"


def _lead(client: TestClient, tenant: Tenant, **body: Any) -> str:
    response = client.post("/leads", json=body, headers=tenant.agent)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _template(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    payload = {"name": "quote", "subject": "Your quote, {{ first_name }}", "text": TEXT, **body}
    response = client.post("/templates/email", json=payload, headers=tenant.admin)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _preview(client: TestClient, tenant: Tenant, template_id: str, lead_id: str) -> Any:
    return client.post(
        f"/templates/{template_id}/preview", json={"lead_id": lead_id}, headers=tenant.agent
    )


ASHA = {
    "name": "Asha Rao",
    "contacts": [{"channel": "email", "value": "asha@example.org"}],
    "attributes": {"product": "Premium plan"},
}


def test_a_template_renders_the_leads_fields(client: TestClient, acme: Tenant) -> None:
    template = _template(client, acme, html=HTML)
    assert template["channel"] == "email"
    assert template["subject"] == "Your quote, {{ first_name }}"
    assert template["html"] == HTML
    assert template["status"] == "approved"
    listed = client.get("/templates", headers=acme.agent).json()["items"]
    assert [t["name"] for t in listed] == ["quote"]

    lead = _lead(client, acme, **ASHA)
    response = _preview(client, acme, template["id"], lead)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "Your quote, Asha",
        "text": (
            "Hello Asha,\nAcme has your Premium plan quote (New).\nWe will write to "
            "asha@example.org.\n"
        ),
        "html": "<p>Hello Asha Rao of Acme</p><p>Premium plan</p>",
    }


def test_the_html_part_escapes_what_the_lead_wrote(client: TestClient, acme: Tenant) -> None:
    template = _template(client, acme, html=HTML)
    lead = _lead(
        client,
        acme,
        name="<script>alert(1)</script> Bob",
        contacts=[{"channel": "email", "value": "bob@example.org"}],
        attributes={"product": "<b>x</b> & y"},
    )
    rendered = _preview(client, acme, template["id"], lead).json()
    assert "<script>" not in rendered["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Bob" in rendered["html"]
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in rendered["html"]
    # The text part and the subject are not HTML: they carry the name as written.
    assert rendered["subject"] == "Your quote, <script>alert(1)</script>"
    assert "<b>x</b> & y" in rendered["text"]


def test_a_missing_field_is_an_error_naming_it_and_the_lead(
    client: TestClient, acme: Tenant
) -> None:
    template = _template(client, acme)
    no_name = _lead(client, acme, contacts=[{"channel": "email", "value": "n@example.org"}])
    response = _preview(client, acme, template["id"], no_name)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "template_variable_missing"
    assert body["variable"] == "first_name" and body["lead_id"] == no_name
    assert "first_name" in body["detail"] and no_name in body["detail"]

    no_product = _lead(client, acme, name="Ravi", contacts=ASHA["contacts"])
    body = _preview(client, acme, template["id"], no_product).json()
    assert body["variable"] == "custom.product"

    # A fallback the template asks for is honoured.
    fallback = _template(
        client,
        acme,
        name="fallback",
        subject="Hi {{ first_name | default('there') }}",
        text="{% if phone is defined %}Call {{ phone }}{% else %}No phone{% endif %}",
    )
    rendered = _preview(client, acme, fallback["id"], no_name).json()
    assert rendered == {"subject": "Hi there", "text": "No phone", "html": None}


def test_render_email_template_raises_before_sending(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    template = _template(client, acme)
    lead = _lead(client, acme, **ASHA)
    no_name = _lead(client, acme)
    with session_factory() as session:
        rendered = render_email_template(
            session,
            company_id=acme.company_id,
            template_id=uuid.UUID(template["id"]),
            lead_id=uuid.UUID(lead),
        )
        assert isinstance(rendered, RenderedEmail)
        assert rendered.subject == "Your quote, Asha" and rendered.html is None
        with pytest.raises(TemplateVariableMissing, match="first_name"):
            render_email_template(
                session,
                company_id=acme.company_id,
                template_id=uuid.UUID(template["id"]),
                lead_id=uuid.UUID(no_name),
            )


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ({"text": "Hello {{ name "}, "template_syntax_error", "text line 1"),
        ({"html": "<p>\n{% if name %}\n</p>"}, "template_syntax_error", "html line"),
        ({"subject": "Hi {{ frist_name }}"}, "template_unknown_variable", "frist_name"),
        ({"text": "{{ ''.__class__.__mro__ }}"}, "template_unsafe", "__class__"),
        ({"html": "{{ custom.update.__self__ }}"}, "template_unsafe", "__self__"),
    ],
)
def test_bad_templates_are_refused_at_create_time(
    client: TestClient, acme: Tenant, body: dict[str, Any], error: str, words: str
) -> None:
    payload = {"name": "bad", "subject": "Hi", "text": "Hello", **body}
    response = client.post("/templates/email", json=payload, headers=acme.admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == error
    assert words in response.json()["detail"]
    assert client.get("/templates", headers=acme.agent).json()["items"] == []


def test_templates_need_an_admin_and_names_are_unique(client: TestClient, acme: Tenant) -> None:
    payload = {"name": "quote", "subject": "Hi", "text": "Hello"}
    assert client.post("/templates/email", json=payload, headers=acme.agent).status_code == 403
    _template(client, acme)
    again = client.post("/templates/email", json=payload, headers=acme.admin)
    assert again.status_code == 409


def test_companies_cannot_preview_each_others_templates_or_leads(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    acme_template = _template(client, acme)["id"]
    acme_lead = _lead(client, acme, **ASHA)
    globex_template = _template(client, globex)["id"]
    globex_lead = _lead(client, globex, **ASHA)
    # Globex's key with Acme's template, or with Acme's lead: neither exists for Globex.
    assert _preview(client, globex, acme_template, globex_lead).status_code == 404
    leaked = _preview(client, globex, globex_template, acme_lead)
    assert leaked.status_code == 404 and "Asha" not in leaked.text
    assert _preview(client, globex, globex_template, globex_lead).status_code == 200
    assert [t["id"] for t in client.get("/templates", headers=globex.agent).json()["items"]] == [
        globex_template
    ]
