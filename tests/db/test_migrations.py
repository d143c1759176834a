from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from shvya.db.engine import make_engine, make_session_factory
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


def test_company_slugs_are_made_for_existing_companies_and_no_row_is_lost(
    empty_database_url: str,
) -> None:
    """0008 drops the unique company name and adds slugs. On SQLite that rebuilds the companies
    table, whose DROP would cascade to every tenant's rows if foreign keys stayed on."""
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import Table, insert, select

    from shvya.db.base import JSONType, UTCDateTime
    from shvya.onboarding import create_company

    url = empty_database_url
    upgrade_database(url, "0006")
    engine = make_engine(url)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    companies = Table(
        "companies",
        sa.MetaData(),
        sa.Column("id", sa.Uuid()),
        sa.Column("name", sa.String()),
        sa.Column("timezone", sa.String()),
        sa.Column("plan", sa.String()),
        sa.Column("company_card", JSONType),
        sa.Column("settings", JSONType),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
    )
    api_keys = Table(
        "api_keys",
        sa.MetaData(),
        sa.Column("id", sa.Uuid()),
        sa.Column("company_id", sa.Uuid()),
        sa.Column("name", sa.String()),
        sa.Column("role", sa.String()),
        sa.Column("prefix", sa.String()),
        sa.Column("key_hash", sa.String()),
        sa.Column("created_at", UTCDateTime()),
    )
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        for number, (company_id, name) in enumerate(
            [(first, "Acme Motors"), (second, "ACME motors!"), (third, "Über Café")]
        ):
            conn.execute(
                insert(companies).values(
                    id=company_id,
                    name=name,
                    timezone="UTC",
                    plan="free",
                    company_card={},
                    settings={},
                    created_at=now.replace(minute=number),
                    updated_at=now,
                )
            )
        conn.execute(
            insert(api_keys).values(
                id=uuid.uuid4(),
                company_id=first,
                name="",
                role="admin",
                prefix="shvya_0123456789ab",
                key_hash="0" * 64,
                created_at=now,
            )
        )
    engine.dispose()

    upgrade_database(url)
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        slugs = dict(conn.execute(text("SELECT name, slug FROM companies")).all())
        assert slugs == {
            "Acme Motors": "acme-motors",
            "ACME motors!": "acme-motors-2",
            "Über Café": "uber-cafe",
        }
        assert conn.execute(select(api_keys.c.company_id)).scalars().all() == [first]
    with make_session_factory(engine)() as session:
        again = create_company(session, name="Acme Motors", now=now)
        session.commit()
        assert again.slug == "acme-motors-3"
    engine.dispose()


def test_0009_gives_a_shared_waba_to_the_company_that_connected_it_first(
    empty_database_url: str,
) -> None:
    """Before 0009 two companies could connect the same WABA; its template and consent
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
    """Migration 0010 flags one company of an installation made before it as its default."""
    url = f"sqlite:///{tmp_path / 'before.db'}"
    command.upgrade(alembic_config(url), "0006")
    engine = make_engine(url)
    table = sa.Table("companies", sa.MetaData(), autoload_with=engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for position, name in enumerate(companies):
            when = start + timedelta(days=position)
            conn.execute(
                sa.insert(table).values(
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


def test_0014_turns_old_suppression_sources_into_suppression_source_values(
    empty_database_url: str,
) -> None:
    """Before 0014 a suppression's source was free-form: webhook, api, cli, ai or keyword."""
    upgrade_database(empty_database_url, "0013")
    json_type = sa.JSON().with_variant(JSONB(), "postgresql")
    companies = sa.table(
        "companies",
        sa.column("id", sa.Uuid()),
        *(sa.column(name) for name in ("name", "slug", "timezone", "plan")),
        sa.column("company_card", json_type),
        sa.column("settings", json_type),
        sa.column("is_default", sa.Boolean()),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    suppressions = sa.table(
        "suppressions",
        sa.column("id", sa.Uuid()),
        sa.column("company_id", sa.Uuid()),
        *(sa.column(name) for name in ("channel", "address", "reason", "source")),
        sa.column("created_at", UTCDateTime()),
    )
    company_id = uuid.uuid4()
    old = {"webhook": "provider", "api": "manual", "cli": "manual", "ai": "keyword"}
    old["keyword"] = "keyword"
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(companies).values(
                    id=company_id,
                    name="Acme",
                    slug="acme",
                    timezone="UTC",
                    plan="free",
                    company_card={},
                    settings={},
                    is_default=False,
                    created_at=T0,
                    updated_at=T0,
                )
            )
            for source in old:
                conn.execute(
                    sa.insert(suppressions).values(
                        id=uuid.uuid4(),
                        company_id=company_id,
                        channel="email",
                        address=f"{source}@example.com",
                        reason="opt_out",
                        source=source,
                        created_at=T0,
                    )
                )

        def sources() -> dict[str, str]:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(suppressions.c.address, suppressions.c.source))
                return {address.split("@")[0]: source for address, source in rows}

        upgrade_database(empty_database_url, "0014")
        assert sources() == old
        command.downgrade(alembic_config(empty_database_url), "0013")
        assert sources() == {
            "webhook": "webhook",
            "api": "api",
            "cli": "api",
            "ai": "keyword",
            "keyword": "keyword",
        }
    finally:
        engine.dispose()
