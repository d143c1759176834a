"""A stand-in for the AI that answers on the sandbox channel, for the API and browser tests."""

from __future__ import annotations

import uuid
from typing import Any

from shvya.channels import service as channels
from shvya.channels.schemas import OutboundContent
from shvya.conversations import service as conversations
from shvya.crm.models import Channel
from shvya.db.phases import Phases
from shvya.jobs.runner import JobContext


def sandbox_reply_to(text: str) -> str:
    return f"Thanks for writing! You said: {text}"


def answer_on_sandbox(ctx: JobContext) -> Phases[dict[str, Any]]:
    """Answer each inbound message on the sandbox channel, through the router like any reply."""
    asked = conversations.get_message(
        ctx.session,
        company_id=ctx.job.company_id,
        message_id=uuid.UUID(ctx.job.payload["message_id"]),
    )
    result = yield from channels.send_message(
        ctx.session,
        company_id=ctx.job.company_id,
        lead_id=uuid.UUID(ctx.job.payload["lead_id"]),
        channel=Channel.sandbox,
        content=OutboundContent(text=sandbox_reply_to(asked.text)),
        send_key=f"reply:{ctx.job.id}",
        settings=ctx.settings,
        now=ctx.clock.now,
    )
    return result.model_dump(mode="json", exclude_none=True)
