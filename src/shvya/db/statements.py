"""Statements both dialects support but spell differently, built once per shape.

The hot paths (every inbound message) run through here, so statements are prebuilt and
executed on the session's Connection: building a statement per call, or sending a Core
statement through the ORM's execution path, costs more CPU than the database does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert


@cache
def _insert_or_ignore_statement(dialect: str, table: Table, conflict_on: tuple[str, ...]) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(table).on_conflict_do_nothing(index_elements=list(conflict_on)).returning(table.c.id)
    )


def insert_many_or_ignore(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict_on: Sequence[str],
) -> set[uuid.UUID]:
    """insert_or_ignore for many rows in one statement (each row has its `id`): the ids of
    the rows that went in; a row whose unique key exists already is left out."""
    if not rows:
        return set()
    connection = session.connection()
    statement = _insert_or_ignore_statement(connection.dialect.name, table, tuple(conflict_on))
    # An executemany with RETURNING: SQLAlchemy sends it as multi-row INSERTs ("insertmanyvalues")
    # from the one cached statement.
    return set(connection.execute(statement, list(rows)).scalars())


def insert_or_ignore(
    session: Session,
    table: Table,
    values: dict[str, Any],
    *,
    conflict_on: Sequence[str],
) -> uuid.UUID | None:
    """INSERT ... ON CONFLICT (conflict_on) DO NOTHING RETURNING id.

    Returns the new row's id, or None when a row with the same unique key exists (committed
    by anyone, or written earlier in this transaction). On PostgreSQL a concurrent insert of
    the same key waits for the other transaction and then reports the conflict, so the
    unique index, not a prior SELECT, decides who wins.
    """
    connection = session.connection()
    statement = _insert_or_ignore_statement(connection.dialect.name, table, tuple(conflict_on))
    parameters = dict(values)
    if "id" not in parameters:
        from shvya.db.base import new_id

        parameters["id"] = new_id()
    row = connection.execute(statement, parameters).first()
    return None if row is None else row[0]
