"""The dry run (docs/sequences.md, "Dry run"): the live timing and router code on a simulated
clock, writing nothing; the API's report and the command's table."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from shvya.cli import app as cli
from shvya.conversations.models import Message
from shvya.events.models import Event
from shvya.jobs.models import Job
from shvya.sequences.models import Enrollment
from shvya.tenancy.models import Company
from tests.sequences.conftest import create_sequence, new_lead
from tests.support import Tenant

# Timing, content and policy code: the same on either database (tests/sequences/conftest.py).
pytestmark = pytest.mark.one_database

OFFICE = {"from": "09:00", "to": "18:00", "weekdays": [1, 2, 3, 4, 5]}
SAN_FRANCISCO, LONDON, SUPPRESSED = "+14155550100", "+447911123456", "+14155550111"


def _counts(factory: sessionmaker[Session]) -> tuple[int, ...]:
    with factory() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(m)) or 0
            for m in (Message, Event, Job, Enrollment)
        )


@pytest.fixture
def setup(client: TestClient, acme: Tenant) -> tuple[str, list[str]]:
    seq = create_sequence(
        client,
        acme,
        stop_on=["reply"],
        steps=[
            {"channel": "sandbox", "text": "Hello", "window": OFFICE},
            {"channel": "sandbox", "after": {"days": 1}, "text": "Again", "window": OFFICE},
        ],
    )["id"]
    leads = [new_lead(client, acme, ("sandbox", p)) for p in (SAN_FRANCISCO, LONDON, SUPPRESSED)]
    body = {"channel": "sandbox", "address": SUPPRESSED, "reason": "opt_out"}
    assert client.post("/suppressions", json=body, headers=acme.admin).status_code == 201
    return seq, leads


def test_the_dry_run_reports_per_day_and_step_and_writes_nothing(
    client: TestClient,
    acme: Tenant,
    session_factory: sessionmaker[Session],
    setup: tuple[str, list[str]],
) -> None:
    """Thursday 10:00 UTC: London (10:00 local) gets step 0 now; San Francisco (02:00) waits
    for 09:00 there; step 1 goes a day later at the same local times. The suppressed lead is
    refused by the router."""
    seq, leads = setup
    before = _counts(session_factory)
    response = client.post(
        f"/sequences/{seq}/simulate", json={"lead_ids": leads, "days": 7}, headers=acme.agent
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert _counts(session_factory) == before
    assert report["leads"] == 3
    [first_day, second_day] = report["per_day"]
    assert (first_day["key"], first_day["sends"]) == ("2026-11-26", 2)
    assert (second_day["key"], second_day["sends"]) == ("2026-11-27", 2)
    step0 = report["per_step"][0]
    assert (step0["earliest_local_send"], step0["latest_local_send"]) == ("09:00", "10:00")
    # San Francisco's two leads (one of them suppressed) wait for their window.
    assert step0["deferrals"] == {"window": 2}
    assert step0["refusals"] == {"suppressed": 1}
    assert report["total"]["sends"] == 4
    assert report["total"]["stops"] == {"suppressed": 1}


def test_every_lead_replying_stops_before_any_send(
    client: TestClient, acme: Tenant, setup: tuple[str, list[str]]
) -> None:
    seq, leads = setup
    response = client.post(
        f"/sequences/{seq}/simulate",
        json={"lead_ids": leads[:2], "days": 7, "reply_rate": 1},
        headers=acme.agent,
    )
    assert response.status_code == 200, response.text
    assert response.json()["total"]["sends"] == 0
    assert response.json()["total"]["stops"] == {"reply": 2}
    other = client.post(
        f"/sequences/{seq}/simulate", json={"stage": "New"}, headers=acme.agent
    ).json()
    assert other["leads"] == 3


def test_another_company_cannot_simulate_the_sequence(
    client: TestClient, globex: Tenant, setup: tuple[str, list[str]]
) -> None:
    seq, _ = setup
    response = client.post(
        f"/sequences/{seq}/simulate", json={"stage": "New"}, headers=globex.agent
    )
    assert response.status_code == 404


def test_the_command_prints_the_report_as_a_table(
    database_url: str,
    setup: tuple[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    session_factory: sessionmaker[Session],
) -> None:
    seq, leads = setup
    listing = tmp_path / "leads.txt"
    listing.write_text("\n".join(leads[:2]) + "\n")
    monkeypatch.setenv("SHVYA_DATABASE_URL", database_url)
    before = _counts(session_factory)
    result = CliRunner().invoke(
        cli, ["sequences", "simulate", seq, "--leads", str(listing), "--days", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "2 leads, 3 days" in lines[0]
    total = lines[-1].split()
    assert total[:2] == ["total", "4"]
    assert _counts(session_factory) == before


def test_the_dry_run_spreads_sends_over_the_companys_limits_as_a_live_run_would(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    """Five leads, one step, at most two sends an hour on the account: the simulated sends of
    the first leads hold the later ones, hour by hour (the limit counts what it simulated)."""
    with session_factory() as session:
        company = session.get_one(Company, acme.company_id)
        company.settings = {**company.settings, "sending_limits": {"sandbox": {"per_hour": 2}}}
        session.commit()
    seq = create_sequence(
        client, acme, stop_on=["reply"], steps=[{"channel": "sandbox", "text": "Hello"}]
    )["id"]
    leads = [new_lead(client, acme, ("sandbox", f"+1415555020{n}")) for n in range(5)]
    before = _counts(session_factory)
    report = client.post(
        f"/sequences/{seq}/simulate", json={"lead_ids": leads, "days": 1}, headers=acme.agent
    ).json()
    assert _counts(session_factory) == before
    [step] = report["per_step"]
    assert step["sends"] == 5
    # Two go at 10:00 UTC (02:00 in San Francisco), two an hour later, the last two hours later.
    assert (step["earliest_local_send"], step["latest_local_send"]) == ("02:00", "04:00")
    assert step["deferrals"] == {"account_hourly_limit": 4}
