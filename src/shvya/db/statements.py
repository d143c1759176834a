"""Statements both dialects support but spell differently."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_or_ignore(
    session: Session, table: Table, values: dict[str, Any], *, conflict_on: Sequence[str]
) -> uuid.UUID | None:
    """INSERT ... ON CONFLICT (conflict_on) DO NOTHING RETURNING id.

    Returns the new row's id, or None when a row with the same unique key exists (committed
    by anyone, or written earlier in this transaction). On PostgreSQL a concurrent insert of
    the same key waits for the other transaction and then reports the conflict, so the
    unique index, not a prior SELECT, decides who wins.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict_on))
        .returning(table.c.id)
    )
    row = session.execute(statement).first()
    return None if row is None else row[0]
