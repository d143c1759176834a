"""Suppression sources: where each suppression came from, filters on it, and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya.crm import service as crm
from shvya.crm.models import SuppressionReason, SuppressionSource
from tests.support import T0, Tenant

ROWS = [
    ("email", "bounced@client.test", SuppressionReason.bounce, SuppressionSource.bounce),
    ("email", "spam@client.test", SuppressionReason.complaint, SuppressionSource.complaint),
    ("email", "unsub@client.test", SuppressionReason.opt_out, SuppressionSource.unsubscribe_link),
    ("wa_cloud", "+16315551181", SuppressionReason.opt_out, SuppressionSource.keyword),
    ("wa_cloud", "+16315551182", SuppressionReason.marketing_opt_out, SuppressionSource.provider),
    ("email", "=HYPERLINK(1)@client.test", SuppressionReason.manual, SuppressionSource.manual),
]


def _suppress(factory: sessionmaker[Session], tenant: Tenant) -> None:
    with factory() as session:
        for minutes, (channel, address, reason, source) in enumerate(ROWS):
            crm.add_suppression(
                session,
                company_id=tenant.company_id,
                channel=channel,
                address=address,
                reason=reason,
                source=source,
                actor="test",
                now=T0 + timedelta(minutes=minutes),
            )
        session.commit()


def test_the_list_shows_each_source_and_filters_by_source_and_channel(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    _suppress(session_factory, acme)
    listed = client.get("/suppressions", headers=acme.admin).json()
    assert listed["total"] == len(ROWS)
    assert {(s["address"], s["source"]) for s in listed["items"]} == {
        (address, source.value) for _, address, _, source in ROWS
    }

    bounces = client.get("/suppressions", params={"source": "bounce"}, headers=acme.admin)
    assert [s["address"] for s in bounces.json()["items"]] == ["bounced@client.test"]
    whatsapp = client.get(
        "/suppressions", params={"channel": "wa_cloud"}, headers=acme.admin
    ).json()
    assert [s["address"] for s in whatsapp["items"]] == ["+16315551182", "+16315551181"]
    both = client.get(
        "/suppressions", params={"channel": "wa_cloud", "source": "keyword"}, headers=acme.admin
    ).json()
    assert [s["address"] for s in both["items"]] == ["+16315551181"]


def test_an_unknown_source_or_channel_is_a_422_naming_the_allowed_ones(
    client: TestClient, acme: Tenant
) -> None:
    for path in ("/suppressions", "/suppressions.csv"):
        bad = client.get(path, params={"source": "webhook"}, headers=acme.admin)
        assert bad.status_code == 422
        text = bad.text
        for allowed in ("keyword", "unsubscribe_link", "bounce", "complaint", "provider"):
            assert allowed in text
        assert client.get(path, params={"channel": "fax"}, headers=acme.admin).status_code == 422


def test_the_csv_export_has_a_header_and_every_row_newest_first(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    _suppress(session_factory, acme)
    response = client.get("/suppressions.csv", headers=acme.admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["address", "channel", "reason", "source", "created_at"]
    expected = [
        [address, channel, reason.value, source.value]
        for channel, address, reason, source in reversed(ROWS)
    ]
    # A cell a spreadsheet would run as a formula is quoted with a leading apostrophe.
    expected[0][0] = "'=HYPERLINK(1)@client.test"
    assert [row[:4] for row in rows[1:]] == expected
    assert [row[4] for row in rows[-2:]] == ["2026-11-26T10:01:00Z", "2026-11-26T10:00:00Z"]

    bounces = client.get("/suppressions.csv", params={"source": "bounce"}, headers=acme.admin)
    assert [row[0] for row in csv.reader(io.StringIO(bounces.text))] == [
        "address",
        "bounced@client.test",
    ]


def test_only_admins_export_and_only_their_own_company(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    session_factory: sessionmaker[Session],
) -> None:
    _suppress(session_factory, acme)
    assert client.get("/suppressions.csv", headers=acme.agent).status_code == 403
    assert client.get("/suppressions.csv").status_code == 401
    theirs = client.get("/suppressions.csv", headers=globex.admin)
    assert theirs.status_code == 200
    assert list(csv.reader(io.StringIO(theirs.text))) == [
        ["address", "channel", "reason", "source", "created_at"]
    ]
    assert client.get("/suppressions", headers=globex.admin).json()["total"] == 0


def test_a_suppression_with_a_source_outside_the_list_is_refused(
    session_factory: sessionmaker[Session], acme: Tenant
) -> None:
    with session_factory() as session, pytest.raises(ValueError, match="webhook"):
        crm.add_suppression(
            session,
            company_id=acme.company_id,
            channel="email",
            address="x@client.test",
            reason=SuppressionReason.bounce,
            source="webhook",
            actor="test",
            now=T0,
        )
