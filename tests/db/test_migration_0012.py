"""Migration 0012: a lead paused before it keeps why and since when, from its latest AIPaused
event, so a lead the AI handed off before the upgrade is listed as needing a person."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from shvya.app import create_app
from shvya.config import Settings
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import alembic_config, upgrade_database
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Role
from tests.support import T0

START = datetime(2026, 1, 1)  # naive UTC: what SQLite stores


def test_paused_leads_take_the_reason_and_time_of_their_latest_pause(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'before.db'}"
    command.upgrade(alembic_config(url), "0011")
    engine = make_engine(url)
    tables = {
        name: sa.Table(name, sa.MetaData(), autoload_with=engine)
        for name in ("companies", "pipelines", "stages", "leads", "events")
    }
    company, pipeline, stage = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    handed_off, paused_long_ago, answering = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tables["companies"]).values(
                id=company.hex,
                name="Acme",
                slug="acme",
                timezone="UTC",
                plan="free",
                company_card={},
                settings={},
                created_at=START,
                updated_at=START,
            )
        )
        conn.execute(
            sa.insert(tables["pipelines"]).values(
                id=pipeline.hex,
                company_id=company.hex,
                name="Sales",
                is_default=True,
                created_at=START,
            )
        )
        conn.execute(
            sa.insert(tables["stages"]).values(
                id=stage.hex,
                company_id=company.hex,
                pipeline_id=pipeline.hex,
                name="New",
                position=0,
                ai_config={},
                created_at=START,
            )
        )
        for lead, paused in ((handed_off, True), (paused_long_ago, True), (answering, False)):
            conn.execute(
                sa.insert(tables["leads"]).values(
                    id=lead.hex,
                    company_id=company.hex,
                    pipeline_id=pipeline.hex,
                    stage_id=stage.hex,
                    name=lead.hex[:6],
                    attributes={},
                    priority=0,
                    ai_paused=paused,
                    created_at=START,
                    updated_at=START,
                )
            )
        # The handed-off lead was paused by a person once, resumed, then handed off.
        for minutes, kind, reason in (
            (1, "AIPaused", "on a call"),
            (2, "AIResumed", "resumed"),
            (3, "AIPaused", "handoff: unknown_answer"),
        ):
            conn.execute(
                sa.insert(tables["events"]).values(
                    id=uuid.uuid4().hex,
                    company_id=company.hex,
                    entity_type="lead",
                    entity_id=handed_off.hex,
                    type=kind,
                    data={"reason": reason},
                    actor="ai",
                    created_at=START + timedelta(minutes=minutes),
                )
            )
    upgrade_database(url)
    with engine.connect() as conn:
        rows = {
            row.id: (row.ai_paused_reason, row.ai_paused_at, row.assigned_user_id)
            for row in conn.execute(
                sa.text("SELECT id, ai_paused_reason, ai_paused_at, assigned_user_id FROM leads")
            )
        }
    assert rows[handed_off.hex][0] == "handoff: unknown_answer"
    assert str(rows[handed_off.hex][1]).startswith("2026-01-01 00:03:00")
    assert rows[paused_long_ago.hex][:2] == (None, None)  # no event to tell: left unknown
    assert rows[answering.hex] == (None, None, None)

    with make_session_factory(engine)() as session:
        _, key = tenancy.create_api_key(session, company_id=company, role=Role.agent, now=T0)
        session.commit()
    with TestClient(create_app(Settings(database_url=url), engine=engine)) as client:
        listed = client.get(
            "/leads", params={"needs_person": "true"}, headers={"Authorization": f"Bearer {key}"}
        ).json()
    assert [lead["id"] for lead in listed["items"]] == [str(handed_off)]
    assert listed["items"][0]["ai_paused_since"] == "2026-01-01T00:03:00Z"
    engine.dispose()
