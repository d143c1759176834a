"""No model or embeddings call is made while SHVYA holds a database transaction open: not in a
job (ai.engage, ai.summary, kb.ingest), not in a request (POST /kb/documents, GET /kb/search).
docs/architecture.md, "Phases of a job that calls out".

The fake OpenAI server looks at the database itself each time a request reaches it, while the
client waits for the answer: on PostgreSQL, whether any of SHVYA's connections sits "idle in
transaction"; on SQLite, whether another connection can take the write lock at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from shvya.config import Settings
from tests.ai.salesperson import Desk
from tests.ai.support import PRICING_MD
from tests.fakes.openai_api import FakeOpenAI, RecordedRequest
from tests.support import choose_model, fake_provider_settings, understanding


@pytest.fixture
def settings(database_url: str, fake_openai: FakeOpenAI) -> Settings:
    return Settings(
        database_url=database_url,
        **fake_provider_settings(fake_openai),
        ai_timeout_seconds=5.0,
        embeddings="openai",
        kb_inline_ingest_bytes=2048,
    )


class OpenTransactions:
    """Called by the fake server with each request: records, per request path, whether any of
    SHVYA's database connections held a transaction open while the request waited."""

    def __init__(self, engine: Engine, database_url: str) -> None:
        self.engine = engine
        self.url = make_url(database_url)
        self.seen: list[tuple[str, list[str]]] = []
        self.pids: set[int] = set()
        self._lock = threading.Lock()
        if self.url.get_backend_name() == "postgresql":
            event.listen(engine, "checkout", self._note_pid)

    def _note_pid(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        if not dbapi_connection.autocommit:
            dbapi_connection.rollback()  # hand the connection on as the pool gave it
        with self._lock:
            self.pids.add(int(pid))

    def close(self) -> None:
        if event.contains(self.engine, "checkout", self._note_pid):
            event.remove(self.engine, "checkout", self._note_pid)

    def __call__(self, request: RecordedRequest) -> None:
        asked_at = time.time()
        # A transaction opened for a moment (a lease heartbeat) is over by now; one held
        # across this call is not: its client is waiting for this very answer.
        time.sleep(0.2)
        self.seen.append((request.path, self._open(asked_at)))

    def _open(self, asked_at: float) -> list[str]:
        if self.url.get_backend_name() == "sqlite":
            probe = sqlite3.connect(str(self.url.database), timeout=0)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.rollback()
                return []
            except sqlite3.OperationalError as exc:
                return [f"sqlite write lock held: {exc}"]
            finally:
                probe.close()
        with self._lock:
            pids = sorted(self.pids)
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        dsn = dsn.split("?")[0]
        with psycopg.connect(dsn, autocommit=True) as probe:
            rows = probe.execute(
                "SELECT pid, state, left(query, 80) FROM pg_stat_activity "
                "WHERE pid = ANY(%s) AND state LIKE 'idle in transaction%%' "
                "AND xact_start < to_timestamp(%s)",
                (pids, asked_at),
            ).fetchall()
        return [f"pid {pid} {state}: {query}" for pid, state, query in rows]


@pytest.fixture
def watch(engine: Engine, database_url: str, fake_openai: FakeOpenAI) -> Iterator[OpenTransactions]:
    watcher = OpenTransactions(engine, database_url)
    fake_openai.on_request = watcher
    try:
        yield watcher
    finally:
        fake_openai.on_request = None
        watcher.close()


def use_openai(desk: Desk, *tasks: str) -> None:
    for task in tasks:
        choose_model(desk.client, desk.tenant, task, "openai", "gpt-4o-mini")


def test_no_model_or_embeddings_call_is_made_with_a_transaction_open(
    desk: Desk, fake_openai: FakeOpenAI, watch: OpenTransactions
) -> None:
    # A request that embeds the document's passages, and one that embeds a question.
    desk.setup(kb=PRICING_MD)
    found = desk.client.get(
        "/kb/search", params={"q": "premium plan price"}, headers=desk.tenant.agent
    )
    assert found.status_code == 200, found.text
    assert found.json()["passages"]
    # A large upload read by a kb.ingest job.
    large = "# Warranty\n\n" + "Every car has a 3 year warranty. " * 100
    queued = desk.client.post(
        "/kb/documents", json={"title": "Warranty", "content": large}, headers=desk.tenant.admin
    )
    assert queued.status_code == 202, queued.text
    desk.run()
    # An AI reply (understanding, the question's embedding, the draft) and a summary.
    use_openai(desk, "extract", "engage", "summary")
    fake_openai.reply_json(understanding(intent="price_inquiry"))
    fake_openai.reply_json(
        {"reply": "The premium plan costs 4,999 INR per month.", "sources": [], "answered": True}
    )
    inbound = desk.converse("What does the premium plan cost?")
    assert [m["text"] for m in desk.replies(inbound["lead_id"])] == [
        "The premium plan costs 4,999 INR per month."
    ]
    fake_openai.reply(
        "The lead asked for the premium plan's price. The AI quoted 4,999 INR a month. "
        "No budget or timeline is known yet."
    )
    asked = desk.client.post(f"/leads/{inbound['lead_id']}/summary", headers=desk.tenant.agent)
    assert asked.status_code == 202, asked.text
    desk.run()
    assert desk.job(asked.json()["job_id"])["status"] == "completed"
    # A question in Hindi over the English knowledge base: rewritten into English first (the
    # rewrite task takes the extract task's model).
    fake_openai.reply_json(understanding(intent="price_inquiry", language="hi"))
    fake_openai.reply("What does the premium plan cost?")
    fake_openai.reply_json(
        {"reply": "प्रीमियम प्लान 4,999 INR प्रति माह है।", "sources": [], "answered": True}
    )
    hindi = desk.converse("प्रीमियम प्लान की कीमत क्या है?", phone="+919800000077")
    assert desk.job(hindi["job_id"])["result"]["query_rewritten_to"] == "en"

    paths = [path for path, _ in watch.seen]
    assert paths.count("/v1/embeddings") >= 5  # two documents, the search, the replies' queries
    assert paths.count("/v1/chat/completions") == 6
    held = [(path, found) for path, found in watch.seen if found]
    assert held == []


def test_the_check_sees_a_transaction_held_across_a_call(
    desk: Desk,
    session_factory: sessionmaker[Session],
    fake_openai: FakeOpenAI,
    watch: OpenTransactions,
) -> None:
    """The probe itself: a session that wrote and did not commit, across an embeddings call,
    is seen (what SHVYA did before its calls had phases)."""
    from shvya.knowledge.openai_embeddings import OpenAIEmbeddings
    from shvya.tenancy.models import Company

    with session_factory() as session:
        company = session.get_one(Company, desk.tenant.company_id)
        company.settings = {**company.settings, "probe": str(uuid.uuid4())}
        session.flush()
        OpenAIEmbeddings.from_settings(desk.settings).embed(["a question"])
        session.rollback()
    [(path, found)] = watch.seen
    assert path == "/v1/embeddings"
    assert found
