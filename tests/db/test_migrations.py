from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shvya.db.base import UTCDateTime
from shvya.db.engine import make_engine
from shvya.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    include_object,
    upgrade_database,
)
from shvya.db.models import Base
from shvya.tenancy.models import ChannelAccount, WhatsAppBusinessAccount
from tests.support import T0, make_tenant

PLAN_TABLES = {
    "companies",
    "users",
    "pipelines",
    "stages",
    "leads",
    "lead_contacts",
    "messages",
    "events",
    "sequences",
    "sequence_steps",
    "templates",
    "ai_models",
    "ai_kb_docs",
    "ai_sessions",
    "jobs",
    "report_cache",
    "api_keys",
    "channel_accounts",
}


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_object}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    assert set(inspect(engine).get_table_names()) >= PLAN_TABLES
    assert current_revision(engine) == head_revision()


def test_migrations_downgrade_to_nothing_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade_database(url)
    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade_database(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_events_are_append_only_in_the_database(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    make_tenant(session_factory, "Acme")  # writes CompanyCreated and ApiKeyCreated events
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM events")).scalar()
    assert before == 3
    for statement in ("UPDATE events SET type = 'Changed'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() == before


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no schema, to migrate step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'steps.db'}"
        return
    from tests.conftest import POSTGRES_URL, _libpq_dsn, postgres_unavailable

    try:
        admin = psycopg.connect(_libpq_dsn(POSTGRES_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        postgres_unavailable(str(exc).strip().splitlines()[0])
    schema = f"shvya_steps_{os.getpid()}_{secrets.token_hex(3)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def test_0007_gives_a_shared_waba_to_the_company_that_connected_it_first(
    empty_database_url: str,
) -> None:
    """Before 0007 two companies could connect the same WABA; its template and consent
    webhooks then went to the oldest account (docs/whatsapp.md 1.14)."""
    upgrade_database(empty_database_url, "0006")
    json_type = sa.JSON().with_variant(JSONB(), "postgresql")
    companies = sa.table(
        "companies",
        sa.column("id", sa.Uuid()),
        *(sa.column(name) for name in ("name", "timezone", "plan")),
        sa.column("company_card", json_type),
        sa.column("settings", json_type),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    accounts = sa.table(
        "channel_accounts",
        sa.column("id", sa.Uuid()),
        sa.column("company_id", sa.Uuid()),
        *(sa.column(name) for name in ("channel", "name", "external_id")),
        sa.column("is_active", sa.Boolean()),
        sa.column("config", json_type),
        sa.column("created_at", UTCDateTime()),
    )
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for company_id, name in ((first, "First"), (second, "Second"), (third, "Third")):
                conn.execute(
                    sa.insert(companies).values(
                        id=company_id,
                        name=name,
                        timezone="UTC",
                        plan="free",
                        company_card={},
                        settings={},
                        created_at=T0,
                        updated_at=T0,
                    )
                )
            rows = [
                (first, "1001", {"waba_id": "900", "display_phone_number": "1"}, 0),
                (second, "2001", {"waba_id": "900", "display_phone_number": "2"}, 1),
                (first, "1002", {"waba_id": "900"}, 2),
                (third, "3001", {"waba_id": "700"}, 3),
                (third, "3002", {}, 4),
            ]
            for company_id, number, config, minutes in rows:
                conn.execute(
                    sa.insert(accounts).values(
                        id=uuid.uuid4(),
                        company_id=company_id,
                        channel="wa_cloud",
                        name="",
                        external_id=number,
                        is_active=True,
                        config=config,
                        created_at=T0 + timedelta(minutes=minutes),
                    )
                )
        upgrade_database(empty_database_url)
        with Session(engine) as session:
            owners = {
                row.waba_id: row.company_id
                for row in session.scalars(select(WhatsAppBusinessAccount))
            }
            assert owners == {"900": first, "700": third}
            migrated = {
                row.external_id: (row.config, row.needs_attention)
                for row in session.scalars(select(ChannelAccount))
            }
        assert migrated["1001"] == ({"waba_id": "900", "display_phone_number": "1"}, None)
        assert migrated["1002"] == ({"waba_id": "900"}, None)
        assert migrated["3001"] == ({"waba_id": "700"}, None)
        assert migrated["3002"] == ({}, None)
        config, reason = migrated["2001"]
        assert config == {"display_phone_number": "2"}  # the WABA was the first company's
        assert reason is not None and "900" in reason
        command.downgrade(alembic_config(empty_database_url), "0006")
        upgrade_database(empty_database_url)
    finally:
        engine.dispose()
