"""Every date and time the API reads, in a query or a body, goes through one validator
(shvya.schemas.Timestamp): a value that is not a real moment with its offset is a 422 that
says what is wrong and what is expected, never a 500."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.ai.models import AIUsage
from shvya.conversations.models import Message
from shvya.schemas import RFC3339
from tests.support import T0, Tenant, post_inbound

# Each passes the old regex pattern (digits in the right places, an offset) but is no moment.
IMPOSSIBLE = {
    "2024-13-01T00:00Z": "month must be in 1..12",
    "2024-02-30T10:00:00Z": "day is out of range for month",
    "2024-01-01T25:00:00+00:00": "hour must be in 0..23",
    "2024-01-01T10:61:00Z": "minute must be in 0..59",
    "2024-01-01T10:00:00+24:00": "the offset must be under 24 hours",
}
# Not of the form at all: no offset, Unix seconds, a date alone, words.
MALFORMED = [
    "2024-01-01T10:00:00",
    "1732615200",
    "2024-01-01",
    "yesterday",
    "2024-01-01T10:00:00Z\n",
    "\u0662\u0660\u0662\u0664-01-01T10:00Z",  # Arabic-Indic digits
]
EXPECTED = "RFC 3339 with its offset, e.g. 2026-11-26T10:00:00Z"


def assert_timestamp_refused(response: httpx.Response, field: str, reason: str | None) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert field in {error["field"] for error in body["errors"]}, body
    assert EXPECTED in body["detail"], body["detail"]
    if reason is not None:
        assert f"is not a real date and time ({reason})" in body["detail"], body["detail"]


def test_ai_usage_since_and_until_refuse_impossible_and_malformed_times(
    client: TestClient, acme: Tenant
) -> None:
    for parameter in ("since", "until"):
        for value, reason in IMPOSSIBLE.items():
            response = client.get("/ai/usage", params={parameter: value}, headers=acme.agent)
            assert_timestamp_refused(response, parameter, reason)
        for value in MALFORMED:
            response = client.get("/ai/usage", params={parameter: value}, headers=acme.agent)
            assert_timestamp_refused(response, parameter, None)
    # years 1 and 9999 exist, but not once moved to UTC
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:00-01:00"):
        response = client.get("/ai/usage", params={"since": value}, headers=acme.agent)
        assert response.status_code == 422, response.text
        assert "out of range" in response.json()["detail"]


def test_ai_usage_counts_the_calls_between_since_and_until(
    client: TestClient, acme: Tenant, globex: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        for company, hours_ago in ((acme, 3), (acme, 2), (acme, 1), (globex, 2)):
            session.add(
                AIUsage(
                    company_id=company.company_id,
                    task="engage",
                    provider="offline",
                    model="rules",
                    created_at=T0 - timedelta(hours=hours_ago),
                )
            )
        session.commit()
    window = {"since": "2026-11-26T12:30:00+05:30", "until": "2026-11-26T09:00:00Z"}
    report = client.get("/ai/usage", params=window, headers=acme.agent)
    assert report.status_code == 200, report.text
    body = report.json()
    # 07:00 UTC and 08:00 UTC; not 09:00 (until is exclusive), not Globex's call
    assert body["total"]["calls"] == 2
    assert (body["since"], body["until"]) == ("2026-11-26T07:00:00Z", "2026-11-26T09:00:00Z")
    assert client.get("/ai/usage", headers=acme.agent).json()["total"]["calls"] == 3
    # a window that ends before it starts holds nothing
    backwards = {"since": window["until"], "until": window["since"]}
    assert (
        client.get("/ai/usage", params=backwards, headers=acme.agent).json()["total"]["calls"] == 0
    )


def test_inbound_message_received_at_refuses_impossible_times_and_stores_nothing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    for value, reason in IMPOSSIBLE.items():
        assert_timestamp_refused(
            post_inbound(client, acme, received_at=value), "received_at", reason
        )
    for value in [*MALFORMED, 1732615200]:
        assert_timestamp_refused(post_inbound(client, acme, received_at=value), "received_at", None)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
    accepted = post_inbound(client, acme, received_at="2026-11-26T15:25:00.5+05:30")
    assert accepted.status_code == 201, accepted.text


def test_imported_history_sent_at_refuses_impossible_times(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    lead_id = post_inbound(client, acme).json()["lead_id"]

    def history(sent_at: object) -> httpx.Response:
        item = {"direction": "in", "text": "from the old CRM", "sent_at": sent_at}
        return client.post(
            f"/leads/{lead_id}/history", json={"messages": [item]}, headers=acme.agent
        )

    for value, reason in IMPOSSIBLE.items():
        assert_timestamp_refused(history(value), "messages.0.sent_at", reason)
    assert_timestamp_refused(history("2026-11-20T09:00:00"), "messages.0.sent_at", None)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1
    assert history("2026-11-20T09:00:00Z").status_code == 201


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_schema_says_what_the_validator_accepts(app: FastAPI, backend: str) -> None:
    """One shape for every date and time in the OpenAPI document: a string, date-time, with
    the pattern the validator checks."""
    schema = app.openapi()
    usage = schema["paths"]["/ai/usage"]["get"]["parameters"]

    def string_variant(node: dict[str, Any]) -> dict[str, Any]:
        [variant] = [v for v in node.get("anyOf", [node]) if v.get("type") == "string"]
        return variant

    parameters = [p for p in usage if p["name"] in {"since", "until"}]
    assert len(parameters) == 2
    components = schema["components"]["schemas"]
    sent_at = components["HistoryItemIn"]["properties"]["sent_at"]
    inbound = schema["paths"]["/inbound-message"]["post"]["requestBody"]["content"]
    received_at = inbound["application/json"]["schema"]["properties"]["received_at"]
    for node in [*(p["schema"] for p in parameters), sent_at, received_at]:
        variant = string_variant(node)
        assert (variant["format"], variant["pattern"]) == ("date-time", RFC3339)
