"""What every AI job shares: the run's timings, the model call, the job's lead, and the AI's
text through the channel router. Used by ai.engage and by the follow-ups (bump-ups,
summaries), so neither imports the other's internals."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from shvya.ai import service as ai
from shvya.ai.providers import Completion, CompletionRequest
from shvya.channels import service as channels
from shvya.channels.policies import SendKind
from shvya.channels.schemas import OutboundContent, SendResultOut
from shvya.crm import service as crm
from shvya.crm.models import Channel, Lead
from shvya.db.phases import Phases
from shvya.jobs.runner import JobContext
from shvya.jobs.service import PermanentJobError


@dataclass
class Run:
    """What one AI job run learns and spends, for its job result."""

    started: float = field(default_factory=time.perf_counter)
    provider_ms: float = 0.0
    calls: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def timings(self) -> dict[str, float]:
        total = (time.perf_counter() - self.started) * 1000
        return {
            "total": round(total, 2),
            "provider": round(self.provider_ms, 2),
            "overhead": round(total - self.provider_ms, 2),
        }

    def skip(self, reason: str, **extra: Any) -> dict[str, Any]:
        """The outcome of a run that had nothing to do, and why."""
        return {"outcome": "skipped", "reason": reason, **extra, "timings_ms": self.timings()}


def ask(
    ctx: JobContext, run: Run, request: CompletionRequest, *, lead_id: uuid.UUID
) -> Phases[Completion]:
    """The company's model for this request (a call phase), its time counted as the
    provider's. Raises ProviderError; `ai.service.job_failure()` says what the job does."""
    started = time.perf_counter()
    try:
        completion: Completion = yield from ai.generate(
            ctx.session,
            company_id=ctx.job.company_id,
            request=request,
            settings=ctx.settings,
            now=ctx.clock.now(),
            lead_id=lead_id,
            job_id=ctx.job.id,
        )
        return completion
    finally:
        run.provider_ms += (time.perf_counter() - started) * 1000
        run.calls += 1


def send_text(
    ctx: JobContext,
    lead: Lead,
    channel: Channel,
    text: str,
    *,
    send_key: str,
    meta: dict[str, Any],
    kind: SendKind = SendKind.reply,
    with_send: channels.WithSend | None = None,
) -> Phases[SendResultOut]:
    """The AI's text through the channel router, once per send key, as a reply or a bump-up
    (marketing, which needs the contact's consent). Outside WhatsApp's 24-hour window the
    router may swap it for the company's re-engagement template."""
    sent: SendResultOut = yield from channels.send_message(
        ctx.session,
        company_id=lead.company_id,
        lead_id=lead.id,
        channel=channel,
        content=OutboundContent(text=text, reengage_with_template=True),
        kind=kind,
        send_key=send_key,
        settings=ctx.settings,
        now=ctx.clock.now,
        actor="ai",
        meta=meta,
        with_send=with_send,
    )
    return sent


def payload_id(payload: dict[str, Any], key: str) -> uuid.UUID:
    """An id the job's payload must carry; without it no retry can help."""
    try:
        return uuid.UUID(str(payload[key]))
    except (KeyError, ValueError):
        raise PermanentJobError(
            f"the job's payload has no valid {key!r}: {payload!r}", reason="bad_payload"
        ) from None


def job_lead(ctx: JobContext) -> Lead:
    """The job's lead; a lead deleted since the job was queued fails it for good."""
    lead_id = payload_id(ctx.job.payload, "lead_id")
    try:
        return crm.get_lead(ctx.session, company_id=ctx.job.company_id, lead_id=lead_id)
    except crm.LeadNotFound:
        raise PermanentJobError(f"lead {lead_id} no longer exists", reason="lead_gone") from None
