"""Dense retrieval on a PostgreSQL that has pgvector: a private server from the `pgserver`
package, started for this test module (this machine's own PostgreSQL has no pgvector)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shvya.app import create_app
from shvya.config import Settings
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import upgrade_database
from tests.ai.support import PRICING_MD
from tests.conftest import IN_CI
from tests.support import FakeClock, Tenant, make_tenant


def pgvector_unavailable(reason: str) -> NoReturn:
    """Like every service-backed test (tests/conftest.py): skipped with the reason, a failure
    under CI=true."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the pgvector tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pgvector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("pgserver") is None:
        pgvector_unavailable("the pgserver package is not installed (pip install -e '.[dev]')")
    import pgserver

    directory: Path = tmp_path_factory.mktemp("pgvector")
    try:
        server = pgserver.get_server(str(directory), cleanup_mode="stop")
    except Exception as exc:  # its bundled PostgreSQL did not start: say why
        pgvector_unavailable(f"pgserver could not start its PostgreSQL: {exc}")
    socket_dir = directory
    url = f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"
    upgrade_database(url)
    yield url
    server.cleanup()


@pytest.fixture
def pg_engine(pgvector_url: str) -> Iterator[Engine]:
    engine = make_engine(pgvector_url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE companies, ai_kb_docs, ai_kb_passages, events, api_keys, "
                "pipelines, stages RESTART IDENTITY CASCADE"
            )
        )
    yield engine
    engine.dispose()


def search(client: TestClient, tenant: Tenant, q: str) -> dict[str, Any]:
    response = client.get("/kb/search", params={"q": q, "k": 5}, headers=tenant.agent)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_hybrid_search_uses_pgvector_and_stays_within_the_company(
    pg_engine: Engine, pgvector_url: str
) -> None:
    factory = make_session_factory(pg_engine)
    acme = make_tenant(factory, "Acme")
    globex = make_tenant(factory, "Globex")
    settings = Settings(database_url=pgvector_url)
    with TestClient(create_app(settings, engine=pg_engine, clock=FakeClock())) as client:
        for tenant, title, content in (
            (acme, "Pricing", PRICING_MD),
            (globex, "Globex", "# Globex\nThe Globex premium plan costs 12,000 INR a year."),
        ):
            response = client.post(
                "/kb/documents", json={"title": title, "content": content}, headers=tenant.admin
            )
            assert response.status_code == 201, response.text
        found = search(client, acme, "how much is the premium plan?")
        assert (
            found["retrieval"] == "hybrid (postgresql tsvector + pgvector hnsw, wordllama-l2-256)"
        )
        assert found["passages"][0]["content"].startswith("The premium plan costs 4,999 INR")
        assert set(found["passages"][0]["matched_by"]) == {
            "full_text",
            "full_text:lexicon",
            "dense",
        }
        assert all("Globex" not in p["content"] for p in found["passages"])
        # a question with no word in common is still answered by meaning (dense only)
        dense_only = search(client, acme, "opening hours")
        assert "dense" in dense_only["passages"][0]["matched_by"]
        assert (
            client.get("/health")
            .json()["retrieval"]
            .startswith("hybrid (postgresql tsvector + pgvector")
        )

    with Session(pg_engine) as session:
        stored = session.execute(
            text("SELECT count(*) FROM ai_kb_passages WHERE vector_dims(embedding_vec) = 256")
        ).scalar()
        assert stored == 4
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in session.execute(
                text(
                    "EXPLAIN SELECT id FROM ai_kb_passages WHERE vector_dims(embedding_vec) = 256 "
                    "ORDER BY (embedding_vec::vector(256)) <=> CAST(:q AS vector(256)) LIMIT 5"
                ),
                {"q": "[" + ",".join(["0.1"] * 256) + "]"},
            )
        )
    assert "ix_ai_kb_passages_vec_256" in plan
