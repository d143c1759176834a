"""The `webhook.reminder` job: POST one delivery, signed, through the guard (docs/webhooks.md).

Run in phases (docs/architecture.md, "Phases of a job that calls out"): the delivery is read
and signed, the transaction ends, the POST runs with none open, and its outcome is recorded
with the job's. A failed POST keeps its record and retries with the queue's backoff; the last
attempt's failure settles the delivery as failed.
"""

from __future__ import annotations

import uuid
from typing import Any

from shvya.config import Environment
from shvya.db.phases import Call, Phases
from shvya.jobs.runner import Handler, JobContext
from shvya.jobs.service import PermanentJobError, RetryJob
from shvya.webhooks import safety, service


def make_deliver(resolver: safety.Resolver = safety.system_resolver) -> Handler:
    """The handler, resolving names with `resolver` (tests give their own: docs/webhooks.md,
    "Where SHVYA will not connect")."""

    def deliver(ctx: JobContext) -> Phases[dict[str, Any]]:
        try:
            delivery_id = uuid.UUID(str(ctx.job.payload["delivery_id"]))
        except (KeyError, ValueError):
            raise PermanentJobError(
                f"the job's payload is not a delivery's: {ctx.job.payload!r}", reason="bad_payload"
            ) from None
        prepared = service.prepare_delivery(
            ctx.session,
            company_id=ctx.job.company_id,
            delivery_id=delivery_id,
            job_id=ctx.job.id,
            settings=ctx.settings,
            now=ctx.clock.now(),
        )
        if isinstance(prepared, str):
            return {"delivery_id": str(delivery_id), "skipped": prepared}
        settings = ctx.settings
        attempt: safety.Attempt = yield Call(
            "webhook:post",
            lambda: safety.post(
                prepared.url,
                prepared.body,
                prepared.headers,
                resolver=resolver,
                allow_private=settings.webhook_allow_private,
                production=settings.env is Environment.production,
                timeout=settings.webhook_timeout_seconds,
            ),
        )
        record = service.record_attempt(
            ctx.session,
            company_id=ctx.job.company_id,
            delivery_id=delivery_id,
            attempt=attempt,
            job_attempts=ctx.job.attempts,
            final=ctx.job.attempts >= ctx.job.max_attempts,
            settings=settings,
            now=ctx.clock.now(),
        )
        outcome: dict[str, Any] = {
            "delivery_id": str(delivery_id),
            "response_code": attempt.response_code,
        }
        if record is None:
            return {**outcome, "skipped": "delivery_gone"}
        if attempt.delivered:
            return {**outcome, "status": record.status.value}
        error = attempt.error or f"HTTP {attempt.response_code}"
        if attempt.refused:
            raise PermanentJobError(error, reason="webhook_url_refused", keep_work=True)
        raise RetryJob(error, keep_work=True)

    return deliver


deliver = make_deliver()
