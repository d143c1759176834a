"""The sandbox page chats with the company named "Default" (Settings.sandbox_company)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support import Tenant, make_tenant


@pytest.fixture
def default_company(session_factory: sessionmaker[Session]) -> Tenant:
    return make_tenant(session_factory, "Default")
