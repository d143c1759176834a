"""The AI salesperson on a real WhatsApp Cloud number: a signed webhook in, "typing…" shown on
the lead's message, the grounded reply out through the Graph API (the fake Meta server)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.models import Message
from shvya.crm.models import Lead
from shvya.events.models import Event
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.jobs.service import reap_expired_leases
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant, add_pricing

WA_ID = "919812345678"
REPO = Path(__file__).resolve().parents[2]


def test_a_whatsapp_question_gets_typing_then_the_kb_price(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    add_pricing(client, acme)
    delivered = whatsapp.deliver_inbound(WA_ID, "How much is the premium plan?", wamid="wamid.Q1")
    assert delivered.status_code == 200
    clock.advance(seconds=5)  # the quiet period
    make_worker().run_until_idle()

    [receipt] = whatsapp.read_receipts
    assert (receipt.message_id, receipt.is_typing) == ("wamid.Q1", True)
    [sent] = whatsapp.sent_messages
    assert sent.wa_id == WA_ID
    assert sent.type == "text"
    assert "4,999 INR" in sent.body["text"]["body"]
    assert receipt.at <= sent.at

    # Meta redelivers the same webhook: nothing is answered twice.
    whatsapp.deliver_inbound(WA_ID, "How much is the premium plan?", wamid="wamid.Q1")
    clock.advance(seconds=30)
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1


def test_a_crash_after_the_handoff_message_left_keeps_the_lead_with_a_person(
    whatsapp: FakeMetaGraph,
    database_url: str,
    session_factory: sessionmaker[Session],
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    whatsapp.deliver_inbound(WA_ID, "Can I talk to a real person please?", wamid="wamid.H1")
    clock.advance(seconds=5)
    # A real worker process dies (like kill -9) right after Meta accepted the handoff message.
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.channels.send_once"],
        cwd=REPO,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "META_GRAPH_BASE_URL": whatsapp.base_url,
            "SHVYA_CRASH_AT": "channels.after_provider_accepted",
            "SHVYA_TEST_NOW": clock.now().isoformat(),
            "SHVYA_TEST_REAL_AI": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 137, crashed.stderr
    assert len(whatsapp.sent_messages) == 1
    with session_factory() as session:
        [lead] = session.scalars(select(Lead)).all()
        assert lead.ai_paused is True  # committed with the message row, before Meta was called
    clock.advance(minutes=5)
    with session_factory() as session:
        reap_expired_leases(session, now=clock.now())
        session.commit()
    clock.advance(minutes=1)
    make_worker().run_until_idle()
    assert len(whatsapp.sent_messages) == 1  # never a second handoff message
    with session_factory() as session:
        [message] = session.scalars(select(Message).where(Message.direction == "out")).all()
        handoffs = session.scalars(select(Event).where(Event.type == "HandoffRequested")).all()
        [lead] = session.scalars(select(Lead)).all()
    assert message.status == "unknown"
    assert len(handoffs) == 1
    assert lead.ai_paused is True
