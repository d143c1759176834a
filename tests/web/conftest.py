"""The sandbox page chats with the installation's default company, the first one created
(Settings.sandbox_company names another)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support import Tenant, make_tenant


@pytest.fixture
def default_company(session_factory: sessionmaker[Session]) -> Tenant:
    """The installation's first company, hence its default; ask for it before any other."""
    return make_tenant(session_factory, "Default")
