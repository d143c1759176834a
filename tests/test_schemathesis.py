"""Property-based checks of every operation against its own OpenAPI schema
(docs/reliability.md A13).

Runs on both databases with the keys of two companies and two roles, every built-in check
enabled. Examples per operation are bounded so that the file stays fast in `make test`; set
SHVYA_SCHEMATHESIS_EXAMPLES for the matrix's 100 per operation in CI or 1,000 nightly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st

from shvya.config import Settings
from tests.fakes.meta_graph import FakeMetaGraph
from tests.fakes.twilio_api import FakeTwilio
from tests.support import Tenant, post_inbound

MAX_EXAMPLES = int(os.environ.get("SHVYA_SCHEMATHESIS_EXAMPLES", "25"))
CALLERS = ("acme.agent", "acme.admin", "globex.agent", "globex.admin")


@pytest.fixture
def fake_meta() -> Iterator[FakeMetaGraph]:
    with FakeMetaGraph() as fake:
        yield fake


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid="AC" + "0" * 32, auth_token="schemathesis0token") as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, fake_meta: FakeMetaGraph, fake_twilio: FakeTwilio) -> Settings:
    # Overrides the conftest fixture for this module. The `ignored_auth` check sends every
    # operation without a key; with the default limit of 20 failures a minute the rest of the
    # run would be answered 429. tests/tenancy/test_auth.py covers the limit. Connecting a
    # WhatsApp number asks Meta first: here the fake Graph server, never the internet.
    return Settings(
        database_url=database_url,
        auth_failures_per_minute=1_000_000,
        meta_graph_base_url=fake_meta.base_url,
        meta_graph_version=fake_meta.version,
        # Connecting an SMS number asks Twilio first: the fake, which refuses these keys (422).
        twilio_base_url=fake_twilio.base_url,
    )


@pytest.fixture
def seeded(app: FastAPI, acme: Tenant, globex: Tenant) -> None:
    """A lead in each company, so that some generated ids and stage names find something."""
    with TestClient(app) as client:
        for tenant, phone in ((acme, "+14155550100"), (globex, "+14155550199")):
            response = post_inbound(client, tenant, phone=phone, name=f"{tenant.name} lead")
            assert response.status_code == 201, response.text


# Departures from the defaults, each with its reason:
# - with-security-parameters = false: every request carries a real key of one of the two
#   companies (the `caller`); generated or removed Authorization headers would be overwritten
#   by it, and schemathesis would then judge the response by a mutation that was never sent.
#   Missing, malformed and unknown keys are covered by tests/tenancy/test_auth.py, and the
#   `ignored_auth` check still sends each operation without a key.
# The other two are things the API refuses on purpose that a JSON Schema cannot describe:
# - allow-x00 = false: every text field refuses NUL characters (PostgreSQL cannot store them);
#   a pattern for that on every nested string of free-form `attributes` objects cannot be
#   written in the schema. tests/conversations/test_inbound.py proves NUL answers 422.
# - Contacts (`from`, `contacts[].value`, a suppression's `address`) must be a real phone
#   number or email address, and a knowledge-base upload a readable .md/.txt/.html/.pdf
#   file; a stage rule must name stages of its own pipeline; imported history must not be
#   dated in the future (and needs a channel when the lead has no contact); a WhatsApp
#   number is connected only when Meta confirms its id, WABA and token (an email account
#   only when its server accepts the connection and login); a person's template
#   message names a template the company's catalog must hold, approved, with as many
#   parameters as it takes; a user's e-mail address must be deliverable (a domain with a
#   dot); `GET /leads?assigned_to=me` needs a key that belongs to a person; a DKIM key must
#   be a readable RSA PEM of 2048 bits or more; an email template must parse as Jinja2 and
#   name only the lead's fields, and a preview needs a lead that has them; a quiet-hours
#   window's start and end must differ, Twilio must accept an SMS number's SID and
#   token, a webhook URL must be https to a public address (docs/webhooks.md 5), a
#   sequence's template step names an approved template of the company's catalog, and a
#   stage's auto_enroll_sequence_id one of the company's sequences: no schema can decide
#   these, so 422 is an expected answer to schema-valid data there, and only there.
SCHEMATHESIS_CONFIG = """
# A conformance check, not a latency test: on a loaded 2-core CI machine an in-process request
# can stall past schemathesis's 10 s default while the embedded worker holds the CPU.
request-timeout = 60

[generation]
allow-x00 = false
with-security-parameters = false

[[operations]]
include-name = [
    "POST /inbound-message", "POST /leads", "POST /suppressions", "POST /kb/documents",
    "PUT /pipelines/{pipeline_id}/stage-rules", "POST /leads/{lead_id}/history",
    "POST /channels/whatsapp", "POST /leads/{lead_id}/messages", "POST /users", "GET /leads",
    "POST /channels/email/domains", "POST /templates/email",
    "POST /templates/{template_id}/preview",
    "POST /channels/email",
    "PATCH /channels/quiet-hours", "POST /channels/sms",
    "POST /webhook-subscriptions", "PATCH /webhook-subscriptions/{subscription_id}",
    "POST /sequences", "PATCH /sequences/{sequence_id}", "PATCH /stages/{stage_id}",
]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"
]
"""


@pytest.fixture
def api_schema(app: FastAPI, seeded: None) -> schemathesis.BaseSchema:
    config = schemathesis.config.SchemathesisConfig.from_str(SCHEMATHESIS_CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 reads and writes `node._nodeid` to label each operation; pytest 9.2
    # renamed that attribute (it is `_id` now), so the lazy schema fails with AttributeError.
    # Nodes keep a __dict__, so an attribute of that name restores the old contract; remove
    # this once schemathesis supports pytest 9.2.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@schema.given(caller=st.sampled_from(CALLERS))
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # One database per backend, shared by every example of every operation, is intended: the
    # data that earlier examples wrote is what later ones find.
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
    ],
)
def test_every_operation_conforms_to_its_schema(
    case: schemathesis.Case, caller: str, acme: Tenant, globex: Tenant
) -> None:
    tenant_name, role = caller.split(".")
    tenant = acme if tenant_name == "acme" else globex
    headers = tenant.admin if role == "admin" else tenant.agent
    case.call_and_validate(headers=headers)


def test_patch_lead_schema_offers_null_only_where_null_is_accepted(
    client: TestClient, app: FastAPI, acme: Tenant
) -> None:
    """Found by the test above: PATCH /leads published `priority: integer | null` and answered
    null with 422. A field may be left out; null is offered only where it means something."""
    lead_id = post_inbound(client, acme).json()["lead_id"]
    body_schema = app.openapi()["components"]["schemas"]["LeadPatchIn"]

    def allows_null(field: dict[str, Any]) -> bool:
        return field.get("type") == "null" or any(allows_null(v) for v in field.get("anyOf", []))

    fields = body_schema["properties"]
    assert {name for name, field in fields.items() if allows_null(field)} == {
        "name",
        "assigned_to",  # null unassigns the lead
    }
    for name, field in fields.items():
        response = client.patch(f"/leads/{lead_id}", json={name: None}, headers=acme.agent)
        assert response.status_code == (200 if allows_null(field) else 422), (name, response.text)
