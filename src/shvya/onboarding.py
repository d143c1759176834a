"""A new company: its row (tenancy), its default pipeline (crm) and, on the first start of
an empty installation, an admin key. It composes two domains that do not import each other,
so it lives at the root beside app.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shvya.crm import service as crm
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Company, Role


def create_company(
    session: Session,
    *,
    name: str,
    timezone: str = "UTC",
    phone_region: str | None = None,
    now: datetime,
) -> Company:
    """A company with its default pipeline (New, Qualified, Nurture, Converted, Lost)."""
    company = tenancy.create_company(
        session, name=name, timezone=timezone, phone_region=phone_region, now=now
    )
    crm.create_default_pipeline(session, company_id=company.id, now=now)
    return company


def bootstrap_default_company(session: Session, *, now: datetime) -> tuple[Company, str] | None:
    """On an empty installation: the Default company, its pipeline and an admin key.

    Returns the company and the key to print once, or None when any company exists.
    """
    if session.scalar(select(func.count()).select_from(Company)):
        return None
    company = create_company(session, name=tenancy.DEFAULT_COMPANY_NAME, now=now)
    _, raw_key = tenancy.create_api_key(
        session, company_id=company.id, role=Role.admin, name="first admin key", now=now
    )
    return company, raw_key
