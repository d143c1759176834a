"""The inbound path is written twice (conversations/inbound.py): statement by statement through
the ORM on SQLite, and one statement of data-modifying CTEs on PostgreSQL. The same script of
messages, fed to both with the same clock, must leave the same rows behind."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations import service as conversations
from shvya.conversations.models import Message
from shvya.conversations.schemas import ReceiveResultOut
from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead, LeadContact, Pipeline, Stage, Suppression
from shvya.crm.schemas import StageAIConfig
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.models import Base
from shvya.events.models import Event
from shvya.jobs.models import Job
from tests.support import T0, FakeClock, make_tenant

# What one inbound message may write, in the order ids are labelled.
COMPARED = (Lead, LeadContact, Message, Event, Job, Suppression)
START = T0 + timedelta(hours=1)  # after the companies' onboarding, whose rows are not compared
NEW_QUIET_SECONDS = 7  # not the default 3 s: a path that ignored the stage's would show
QUALIFIED_QUIET_SECONDS = 11
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Labels:
    """Generated ids replaced by the order they first appear in, inside strings too (event
    data, job payloads, idempotency keys), so foreign keys are compared through one map."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return self._label(str(value))
        if isinstance(value, str):
            return UUID_TEXT.sub(lambda match: self._label(match.group()), value)
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        return value

    def _label(self, value: str) -> str:
        if value not in self.seen:
            self.seen[value] = f"<id {len(self.seen) + 1}>"
        return self.seen[value]


def play(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """The script: every kind of message the inbound path treats differently. Returns what
    each step answered."""
    acme = make_tenant(factory, "Acme").company_id
    globex = make_tenant(factory, "Globex").company_id
    clock = FakeClock(START)
    answers: list[dict[str, Any]] = []

    with factory() as session:  # Globex has no pipeline yet: its first lead makes one
        session.execute(delete(Stage).where(Stage.company_id == globex))
        session.execute(delete(Pipeline).where(Pipeline.company_id == globex))
        for name, seconds in (("New", NEW_QUIET_SECONDS), ("Qualified", QUALIFIED_QUIET_SECONDS)):
            stage = crm.resolve_stage(session, company_id=acme, ref=name, pipeline_id=None)
            crm.set_stage_ai_config(
                session,
                company_id=acme,
                stage_id=stage.id,
                config=StageAIConfig(quiet_seconds=seconds),
                actor="test",
                now=clock.now(),
            )
        session.commit()

    def receive(company_id: uuid.UUID, sender: str, text: str, **fields: Any) -> ReceiveResultOut:
        options = {
            key: fields.pop(key) for key in ("opt_out_keywords", "clamp_future") if key in fields
        }
        clock.advance(seconds=1)
        with factory() as session:
            try:
                result = conversations.receive_inbound_message(
                    session,
                    company_id=company_id,
                    message=conversations.InboundMessage(
                        channel=fields.pop("channel", Channel.wa_cloud),
                        sender=sender,
                        text=text,
                        **fields,
                    ),
                    region="US",
                    actor="test",
                    now=clock.now(),
                    **options,
                )
            except conversations.DuplicateInbound as exc:
                session.rollback()  # as the API does: the repeat's unit of work writes nothing
                answers.append({"raised": "DuplicateInbound", **exc.result.model_dump()})
                return exc.result
            session.commit()
        answers.append(result.model_dump())
        return result

    def change(step: Callable[[Session], object]) -> None:
        clock.advance(seconds=1)
        with factory() as session:
            step(session)
            session.commit()

    priya = "+14155550100"
    first = receive(acme, priya, "Hi, what does the premium plan cost?", external_id="wamid.1")
    # a provider's timestamp before ours, and one a little ahead of ours
    receive(
        acme,
        "(415) 555-0100",
        "and delivery to Pune?",
        external_id="wamid.2",
        received_at=clock.now() - timedelta(seconds=40),
    )
    receive(
        acme,
        priya,
        "same again",
        external_id="wamid.3",
        received_at=clock.now() + timedelta(minutes=2),
    )
    receive(acme, priya, "edited on redelivery", external_id="wamid.3")  # a duplicate
    receive(acme, "+14155550177", "moved", external_id="wamid.1")  # a repeat from a new number
    receive(acme, priya, "I'm Priya", name="Priya", external_id="wamid.4")  # names the lead
    receive(acme, priya, "Priya again", name="Not Priya")  # a named lead keeps its name
    receive(acme, priya, "STOP", external_id="wamid.5")
    receive(acme, priya, "stop!")  # opted out already: no second confirmation
    receive(acme, priya, "Start", external_id="wamid.6")
    receive(acme, priya, "band karo", opt_out_keywords=["Band Karo"])
    receive(acme, priya, "hello from my username", external_user_id="US.100")  # fills its id

    ravi = receive(
        acme,
        "+14155550188",
        "Is there a trial?",
        name="Ravi",
        external_id="wamid.7",
        received_at=clock.now() - timedelta(seconds=5),  # a new sender's provider timestamp
    )
    change(
        lambda session: crm.set_ai_paused(
            session,
            lead=crm.get_lead(session, company_id=acme, lead_id=ravi.lead_id),
            paused=True,
            reason="a person took over",
            actor="test",
            now=clock.now(),
        )
    )
    receive(acme, "+14155550188", "hello? anyone?", external_id="wamid.8")  # no ai.engage

    def qualify(session: Session) -> None:
        lead = crm.get_lead(session, company_id=acme, lead_id=first.lead_id)
        stage = crm.resolve_stage(session, company_id=acme, ref="Qualified", pipeline_id=None)
        crm.move_stage(session, lead=lead, stage=stage, actor="test", now=clock.now())

    change(qualify)
    receive(acme, priya, "we are 40 people", external_id="wamid.9")  # Qualified's quiet period

    # WhatsApp users known only by their business-scoped user id, then with a number
    receive(
        acme, "bsuid:US.777", "hi, I use a username", external_user_id="US.777", external_id="w.10"
    )
    receive(acme, "+14155550199", "now with my number", external_user_id="US.777")
    # a webhook's timestamp far ahead of our clock is clamped to it
    receive(
        acme,
        "+14155550111",
        "from the future",
        received_at=clock.now() + timedelta(hours=3),
        clamp_future=True,
        meta={"type": "text", "context": {"id": "wamid.0"}},
    )
    receive(
        acme,
        "Priya@Example.com",
        "by email",
        channel=Channel.email,
        name="Priya",
        received_at=clock.now() - timedelta(seconds=30),  # its only message: kept as written
    )

    # What a provider sends that the database cannot store as it is: kept, cleaned the same
    # way on both paths (NUL removed, lone surrogates replaced, the whole id, JSON's NaN null)
    poisoned_id = "wamid.\u0000" + "P" * 300
    receive(
        acme,
        "+14155550122",
        "nul\u0000 and a lone \ud800 surrogate",
        name="Na\u0000me \udc00",
        external_id=poisoned_id,
        meta={"type": "text", "caption\u0000": "x\u0000\udfff", "score": float("nan")},
    )
    receive(acme, "+14155550122", "redelivered", external_id=poisoned_id)  # a duplicate
    receive(acme, priya, "an id no index entry holds", external_id="wamid." + "h" * 3000)
    # a number the phone library calls invalid, reported by the provider itself
    receive(acme, "+447700900123", "from a new range", sender_from_provider=True)

    receive(globex, "+14155550100", "Hello Globex", name="Asha", external_id="wamid.1")
    receive(globex, "+14155550100", "second to Globex")
    return answers


def snapshot(factory: sessionmaker[Session]) -> dict[str, list[dict[str, Any]]]:
    """Every row the script wrote, table by table, oldest first."""
    with factory() as session:
        return {
            model.__tablename__: [
                dict(row._mapping)
                for row in session.execute(
                    select(model.__table__)
                    .where(model.__table__.c.created_at >= START)
                    .order_by(model.__table__.c.created_at, model.__table__.c.id)
                )
            ]
            for model in COMPARED
        }


def written_by(factory: sessionmaker[Session]) -> dict[str, Any]:
    answers = play(factory)
    rows = snapshot(factory)
    labels = Labels()  # the answers first: their ids are labelled in the same order on both
    return {"answers": labels(answers), **{table: labels(found) for table, found in rows.items()}}


@pytest.fixture
def sqlite_factory(sqlite_template: Path, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    path = tmp_path / "shvya.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def postgres_factory(postgres_engine: Engine) -> sessionmaker[Session]:
    with postgres_engine.begin() as connection:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return make_session_factory(postgres_engine)


@pytest.mark.postgres
def test_sqlite_and_postgresql_write_the_same_rows_for_the_same_messages(
    sqlite_factory: sessionmaker[Session], postgres_factory: sessionmaker[Session]
) -> None:
    on_sqlite = written_by(sqlite_factory)
    on_postgresql = written_by(postgres_factory)

    for part in on_sqlite:
        assert on_postgresql[part] == on_sqlite[part], part
    # The script did what it says, so the comparison above compared something.
    counts = {part: len(rows) for part, rows in on_sqlite.items()}
    assert counts == {
        "answers": 25,
        "leads": 8,
        "lead_contacts": 8,  # the number written with a known user id is that user's contact
        "messages": 22,
        "events": 41,
        "jobs": 19,  # 17 ai.engage (not for keywords or the paused lead), 2 confirmations
        "suppressions": 1,
    }
    duplicates = [a for a in on_sqlite["answers"] if a.get("raised")]
    assert len(duplicates) == 3
    poisoned = next(m for m in on_sqlite["messages"] if m["text"].startswith("nul"))
    assert poisoned["text"] == "nul and a lone \ufffd surrogate"
    assert poisoned["external_id"] == "wamid." + "P" * 300
    assert poisoned["meta"] == {"type": "text", "caption": "x\ufffd", "score": None}
    assert "Name \ufffd" in [lead["name"] for lead in on_sqlite["leads"]]
    huge = next(m for m in on_sqlite["messages"] if m["text"] == "an id no index entry holds")
    assert huge["external_id"].startswith("sha256:")
    assert huge["meta"]["external_id"] == "wamid." + "h" * 3000
    assert "+447700900123" in [contact["value"] for contact in on_sqlite["lead_contacts"]]
    engage = [job for job in on_sqlite["jobs"] if job["type"] == "ai.engage"]
    assert {job["priority"] for job in engage} == {100}
    first_message = on_sqlite["messages"][0]
    assert engage[0]["run_at"] == first_message["received_at"] + timedelta(
        seconds=NEW_QUIET_SECONDS
    )


def test_the_engage_job_is_due_a_quiet_period_after_the_message_never_later() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    due = conversations.engage_due_at
    assert due(received_at=None, created_at=now, quiet_seconds=3) == now + timedelta(seconds=3)
    earlier = now - timedelta(seconds=40)
    assert due(received_at=earlier, created_at=now, quiet_seconds=3) == earlier + timedelta(
        seconds=3
    )
    ahead = now + timedelta(minutes=2)  # a provider clock ahead of ours delays nothing
    assert due(received_at=ahead, created_at=now, quiet_seconds=7.5) == now + timedelta(seconds=7.5)
