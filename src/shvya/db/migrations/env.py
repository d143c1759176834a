"""Alembic environment: the only way SHVYA's schema is made, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from shvya.config import load_settings
from shvya.db.engine import make_engine
from shvya.db.migrate import include_object
from shvya.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        _run_sqlite(connection)
        return
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _run_sqlite(connection: Connection) -> None:
    """Batch mode rebuilds a table (new table, copy, DROP, rename). With foreign keys on,
    SQLite's DROP TABLE first deletes every row, and ON DELETE CASCADE would empty every table
    that refers to it (a rebuild of `companies` would delete every tenant's data). So, as
    SQLite's own procedure for schema changes says: foreign keys off outside the transaction,
    checked before the commit, on again after."""
    if connection.in_transaction():
        raise RuntimeError("SQLite migrations need a connection outside a transaction")
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        include_object=include_object,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    database_url = config.attributes.get("database_url") or load_settings().database_url
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("SHVYA runs migrations against a live database only (no --sql mode).")
run_migrations_online()
