from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, Table, insert, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shvya.db.engine import make_engine
from shvya.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    include_object,
    upgrade_database,
)
from shvya.db.models import Base
from tests.support import make_tenant

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


@pytest.mark.parametrize(
    ("companies", "default"),
    [
        pytest.param(["Acme", "DEFAULT", "Globex"], "DEFAULT", id="the-one-named-default"),
        pytest.param(["Sunrise Motors", "Globex"], "Sunrise Motors", id="else-the-first-created"),
    ],
)
def test_the_default_company_of_an_existing_installation(
    tmp_path: Path, companies: list[str], default: str
) -> None:
    """Migration 0007e flags one company of an installation made before it as its default."""
    url = f"sqlite:///{tmp_path / 'before.db'}"
    command.upgrade(alembic_config(url), "0006")
    engine = make_engine(url)
    table = Table("companies", MetaData(), autoload_with=engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for position, name in enumerate(companies):
            when = start + timedelta(days=position)
            conn.execute(
                insert(table).values(
                    id=uuid.uuid4().hex,
                    name=name,
                    timezone="UTC",
                    plan="free",
                    company_card={},
                    settings={},
                    created_at=when,
                    updated_at=when,
                )
            )
    upgrade_database(url)
    with engine.connect() as conn:
        flagged = conn.execute(text("SELECT name FROM companies WHERE is_default")).scalars().all()
    assert flagged == [default]
    with pytest.raises(DBAPIError), engine.begin() as conn:  # never two defaults
        conn.execute(text("UPDATE companies SET is_default = 1"))
    engine.dispose()
