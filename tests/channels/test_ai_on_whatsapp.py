"""The AI salesperson on a real WhatsApp Cloud number: a signed webhook in, "typing…" shown on
the lead's message, the grounded reply out through the Graph API (the fake Meta server)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from shvya.jobs.engines.embedded import EmbeddedWorker
from tests.ai.support import PRICING_MD
from tests.fakes.meta_graph import FakeMetaGraph
from tests.support import FakeClock, Tenant

WA_ID = "919812345678"


def test_a_whatsapp_question_gets_typing_then_the_kb_price(
    client: TestClient,
    acme: Tenant,
    whatsapp: FakeMetaGraph,
    make_worker: Callable[..., EmbeddedWorker],
    clock: FakeClock,
) -> None:
    added = client.post(
        "/kb/documents", json={"title": "Pricing", "content": PRICING_MD}, headers=acme.admin
    )
    assert added.status_code == 201
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
