"""Every API test runs on SQLite and on PostgreSQL.

PostgreSQL: a fresh schema in the `test` database per test session (SHVYA_TEST_POSTGRES_URL
overrides the server), emptied before each test. Where the server is absent the PostgreSQL
half skips with the reason, except under CI=true, where that is a failure.
SQLite: a migrated template file, copied for each test.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import upgrade_database
from shvya.db.models import Base
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI
from tests.support import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, FakeClock, Tenant, make_tenant

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get(
    "SHVYA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_unavailable(reason: str) -> None:
    message = f"PostgreSQL not reachable at {POSTGRES_URL}: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(message)


def _libpq_dsn(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A migrated schema of its own in the test database, dropped at the end."""
    try:
        admin = psycopg.connect(_libpq_dsn(POSTGRES_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        postgres_unavailable(str(exc).strip().splitlines()[0])
    schema = f"shvya_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    # application_name tells this run's connections from another run's on the same server
    # (a test that cuts "the worker connections" must cut only its own).
    url = make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}
    )
    rendered = url.render_as_string(hide_password=False)
    try:
        upgrade_database(rendered)
        yield rendered
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.fixture(scope="session")
def postgres_engine(postgres_schema_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_schema_url, pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "shvya.db"
    upgrade_database(f"sqlite:///{path}")
    return path


TABLES = [table.name for table in Base.metadata.sorted_tables]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.one_database` keeps a test's SQLite half only: the suite has a time budget
    (docs/architecture.md, "Tests"), and a protocol or a parser proves the same on either."""

    def postgres_half(item: pytest.Item) -> bool:
        params = getattr(getattr(item, "callspec", None), "params", {})
        return bool(item.get_closest_marker("one_database")) and params.get("backend") == (
            "postgresql"
        )

    dropped = [item for item in items if postgres_half(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not postgres_half(item)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "shvya.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_schema_url")
    engine: Engine = request.getfixturevalue("postgres_engine")
    with engine.begin() as conn:
        # TRUNCATE skips row triggers, so the append-only events table empties too.
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture
def engine(database_url: str, backend: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    if backend == "postgresql":
        shared: Engine = request.getfixturevalue("postgres_engine")
        yield shared
        return
    sqlite_engine = make_engine(database_url)
    yield sqlite_engine
    sqlite_engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, auth_failures_per_minute=20)


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock) -> FastAPI:
    return create_app(settings, engine=engine, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def acme(session_factory: sessionmaker[Session]) -> Tenant:
    return make_tenant(session_factory, "Acme")


@pytest.fixture
def globex(session_factory: sessionmaker[Session]) -> Tenant:
    return make_tenant(session_factory, "Globex")


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server on 127.0.0.1 (tests/fakes/openai_api.py)."""
    with FakeOpenAI(api_key=OPENAI_TEST_KEY) as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A fake Anthropic server on 127.0.0.1 (tests/fakes/anthropic_api.py)."""
    with FakeAnthropic(api_key=ANTHROPIC_TEST_KEY) as fake:
        yield fake


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn server on 127.0.0.1, for tests of concurrent requests."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
