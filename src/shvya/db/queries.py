"""Reads every domain repeats: a company's row by id, and a page of rows with their total."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shvya.db.base import Base
from shvya.errors import NotFound
from shvya.schemas import PageRequest

Row = TypeVar("Row", bound=Base)


def get_for_company(
    session: Session,
    model: type[Row],
    row_id: uuid.UUID,
    *,
    company_id: uuid.UUID,
    missing: type[NotFound],
    hint: str = "",
) -> Row:
    """The company's row of `model` with this id, or the domain's NotFound: another company's
    row does not exist for the caller (docs/architecture.md rule 5). Its message names the
    thing as its code does: `lead_not_found` says "lead <id> not found", then `hint`."""
    row = session.scalars(select(model).filter_by(id=row_id, company_id=company_id)).first()
    if row is None:
        thing = missing.code.removesuffix("_not_found")
        raise missing(f"{thing} {row_id} not found{hint}")
    return row


def count_rows(session: Session, model: type[Base], *where: Any) -> int:
    """How many rows of `model` match every condition in `where`."""
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def page_of(
    session: Session,
    model: type[Row],
    *where: Any,
    order_by: Sequence[Any],
    page: PageRequest,
) -> tuple[Sequence[Row], int]:
    """One page of the rows of `model` that match every condition in `where`, in `order_by`
    order, and how many match in all."""
    total = count_rows(session, model, *where)
    rows = session.scalars(
        select(model).where(*where).order_by(*order_by).limit(page.limit).offset(page.offset)
    ).all()
    return rows, total
