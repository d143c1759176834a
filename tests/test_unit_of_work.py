"""The commit happens before the response: a failed commit never answers 2xx
(docs/reliability.md F11)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.conversations.models import Message
from shvya.crm.models import Lead
from shvya.jobs.models import Job
from tests.support import Tenant, post_inbound


@pytest.fixture
def failing_commit(engine: Engine, app: FastAPI, backend: str) -> Iterator[None]:
    """Make the next commits fail inside the database (PostgreSQL: a deferred constraint
    trigger that raises at COMMIT) or at the session's commit (SQLite has no deferred
    triggers)."""
    if backend == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'injected commit failure'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON messages "
                    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit()"
                )
            )
        try:
            yield
        finally:
            with engine.begin() as conn:
                conn.execute(text("DROP TRIGGER fail_at_commit ON messages"))
                conn.execute(text("DROP FUNCTION fail_at_commit()"))
        return

    factory = app.state.session_factory

    def refuse(_session: Session) -> None:
        raise RuntimeError("injected commit failure")

    event.listen(factory, "before_commit", refuse)
    try:
        yield
    finally:
        event.remove(factory, "before_commit", refuse)


def test_failed_commit_is_never_answered_2xx(
    app: FastAPI, acme: Tenant, session_factory: sessionmaker[Session], failing_commit: None
) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = post_inbound(client, acme, external_id="wamid.COMMIT")
    assert response.status_code >= 500, response.text
    with session_factory() as session:
        for model in (Lead, Message, Job):
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_health_reports_the_database(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["retrieval"].startswith("hybrid (")


def test_unreachable_database_is_503_with_the_reason() -> None:
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:9/nowhere")
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "error"
        assert health.json()["database"].startswith("unreachable: OperationalError")
        api = client.get("/leads", headers={"Authorization": "Bearer shvya_abc_def"})
        assert api.status_code == 503
        assert api.json()["error"] == "database_unavailable"
        assert api.headers["retry-after"] == "5"
