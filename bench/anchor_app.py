"""The anchor for bench/ingest.py: the least a FastAPI app can do per inbound message.

Built like SHVYA (sync `def` endpoints, a pydantic body, one SQLAlchemy 2 engine with a
connection pool, one transaction per request) but with nothing else: no auth, no dependencies,
no ORM session. Served by uvicorn exactly like SHVYA, so the ratio between the two is the cost
of SHVYA's own work, not of the machine.

    POST /one-insert          one bare row
    POST /three-inserts       one select and three inserts in one transaction
    GET  /health              for the benchmark to wait on
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.engine import make_url

DATABASE_URL_ENV = "BENCH_ANCHOR_DATABASE_URL"

metadata = MetaData()

bare_rows = Table(
    "bench_anchor_row",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sender", String(320), nullable=False),
    Column("text", Text, nullable=False),
    Column("external_id", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The three-insert route writes a lead-, a message- and an event-shaped row after looking up
# the sender, which is the skeleton of SHVYA's inbound path.
leads = Table(
    "bench_anchor_lead",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sender", String(320), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_bench_anchor_lead_sender", "sender"),
)
messages = Table(
    "bench_anchor_message",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("external_id", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
events = Table(
    "bench_anchor_event",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class MessageIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    channel: str
    from_: str = Field(alias="from")
    text: str
    external_id: str | None = None


def make_engine(database_url: str) -> Engine:
    if make_url(database_url).get_backend_name() != "sqlite":
        return create_engine(database_url, pool_size=10, max_overflow=10)
    engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 15})

    # The same SQLite setup as SHVYA's (WAL, busy timeout, BEGIN IMMEDIATE), so both wait
    # for the write lock the same way.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/one-insert", status_code=201)
    def one_insert(body: MessageIn) -> dict[str, int]:
        with engine.begin() as conn:
            result = conn.execute(
                insert(bare_rows).values(
                    sender=body.from_,
                    text=body.text,
                    external_id=body.external_id,
                    created_at=datetime.now(UTC),
                )
            )
        return {"id": result.inserted_primary_key[0]}

    @app.post("/three-inserts", status_code=201)
    def three_inserts(body: MessageIn) -> dict[str, int | None]:
        now = datetime.now(UTC)
        with engine.begin() as conn:
            known = conn.execute(
                select(leads.c.id).where(leads.c.sender == body.from_).limit(1)
            ).scalar()
            lead_id = conn.execute(
                insert(leads).values(sender=body.from_, created_at=now)
            ).inserted_primary_key[0]
            message_id = conn.execute(
                insert(messages).values(
                    lead_id=lead_id, text=body.text, external_id=body.external_id, created_at=now
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(events).values(
                    lead_id=lead_id, type="InboundMessageReceived", created_at=now
                )
            )
        return {"lead_id": lead_id, "message_id": message_id, "known_lead_id": known}

    return app


def app_from_environment() -> FastAPI:
    """The factory uvicorn calls in each worker process."""
    return create_app(make_engine(os.environ[DATABASE_URL_ENV]))
