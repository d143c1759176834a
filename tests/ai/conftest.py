"""The AI salesperson's tests drive Acme's sales desk (tests/ai/salesperson.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from tests.ai.salesperson import Desk
from tests.support import FakeClock, Tenant


@pytest.fixture
def desk(
    client: TestClient,
    acme: Tenant,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
) -> Desk:
    """Acme's desk, not set up yet: a module that wants it set up for every test overrides
    this fixture and calls `desk.setup(...)`."""
    return Desk(client, acme, engine, settings, clock, session_factory)
