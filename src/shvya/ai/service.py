"""AI generation: the model chosen per task, the provider call, and what each call cost."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shvya.ai.models import AIModel, AIUsage
from shvya.ai.providers import (
    AITask,
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
    TextProvider,
)
from shvya.ai.schemas import UsageTotalsOut
from shvya.config import Settings
from shvya.db.phases import Call, Phases
from shvya.events.service import append_company_event
from shvya.jobs.service import PermanentJobError, RetryJob

logger = logging.getLogger(__name__)


# --- models and generation --------------------------------------------------------------------


DEFAULT_PROVIDER = "offline"
# A task nobody configured takes the choice of the task it defaults to (docs/ai.md 2): the
# query rewrite is a short call like understanding, so it runs on the same (cheap) model.
DEFAULTS_TO = {AITask.rewrite: AITask.extract}


def model_settings(session: Session, *, company_id: uuid.UUID, task: AITask) -> AIModel:
    """The company's choice for a task, or that of the task it defaults to, or the offline
    default (neither stored)."""
    configured = session.scalars(
        select(AIModel).where(AIModel.company_id == company_id, AIModel.task == task.value)
    ).first()
    if configured is not None:
        return configured
    if task in DEFAULTS_TO:
        base = model_settings(session, company_id=company_id, task=DEFAULTS_TO[task])
        return AIModel(
            company_id=company_id,
            task=task.value,
            provider=base.provider,
            model=base.model,
            temperature=base.temperature,
            max_tokens=base.max_tokens,
            price_per_1k_input=base.price_per_1k_input,
            price_per_1k_output=base.price_per_1k_output,
        )
    return AIModel(
        company_id=company_id,
        task=task.value,
        provider=DEFAULT_PROVIDER,
        model="",
        temperature=Decimal("0.30"),
        max_tokens=512,
        price_per_1k_input=Decimal(0),
        price_per_1k_output=Decimal(0),
    )


def list_models(session: Session, *, company_id: uuid.UUID) -> list[AIModel]:
    return [model_settings(session, company_id=company_id, task=task) for task in AITask]


def set_model(
    session: Session,
    *,
    company_id: uuid.UUID,
    task: AITask,
    values: dict[str, Any],
    actor: str,
    now: datetime,
) -> AIModel:
    row = session.scalars(
        select(AIModel).where(AIModel.company_id == company_id, AIModel.task == task.value)
    ).first()
    if row is None:
        row = model_settings(session, company_id=company_id, task=task)
        row.created_at = now
        session.add(row)
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = now
    session.flush()
    append_company_event(
        session,
        company_id=company_id,
        type="AIModelChanged",
        data={"task": task.value, "provider": row.provider, "model": row.model},
        actor=actor,
        now=now,
    )
    return row


ProviderFactory = Callable[[str, Settings], TextProvider]


def make_provider(name: str, settings: Settings) -> TextProvider:
    if name == "offline":
        from shvya.ai.providers.offline import OfflineProvider

        return OfflineProvider()
    if name == "openai":
        from shvya.ai.providers.openai_provider import OpenAIProvider

        return OpenAIProvider.from_settings(settings)
    if name == "anthropic":
        from shvya.ai.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider.from_settings(settings)
    raise ProviderError(ProviderErrorKind.bad_request, f"unknown AI provider {name!r}")


def generate(
    session: Session,
    *,
    company_id: uuid.UUID,
    request: CompletionRequest,
    settings: Settings,
    now: datetime,
    lead_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> Phases[Completion]:
    """Ask the company's provider for this task, and record what the call cost.

    The provider call is the job's call phase (no transaction open); the usage row is its
    record. Raises ProviderError after recording the failed call (and, for a bad key, the
    company's AIProviderAuthFailed alert): `job_failure()` turns it into the job's outcome,
    which keeps those records.
    """
    chosen = model_settings(session, company_id=company_id, task=request.task)
    request = replace(
        request,
        model=chosen.model or request.model,
        temperature=float(chosen.temperature),
        max_tokens=int(chosen.max_tokens),
    )
    usage = AIUsage(
        company_id=company_id,
        lead_id=lead_id,
        job_id=job_id,
        task=request.task.value,
        provider=chosen.provider,
        model=request.model or chosen.provider,
        created_at=now,
    )
    provider_name, prices = chosen.provider, (chosen.price_per_1k_input, chosen.price_per_1k_output)
    try:
        completion: Completion = yield Call(
            f"ai:{request.task.value}",
            lambda: make_provider(provider_name, settings).complete(request),
        )
    except ProviderError as exc:
        usage.outcome = exc.kind.value
        session.add(usage)
        if exc.kind is ProviderErrorKind.auth:
            append_company_event(
                session,
                company_id=company_id,
                type="AIProviderAuthFailed",
                data={"provider": provider_name, "error": exc.message[:300]},
                now=now,
            )
        raise
    usage.model = completion.model
    usage.input_tokens = completion.input_tokens
    usage.output_tokens = completion.output_tokens
    usage.latency_ms = completion.latency_ms
    usage.cost = (
        Decimal(completion.input_tokens) * prices[0] + Decimal(completion.output_tokens) * prices[1]
    ) / 1000
    session.add(usage)
    return completion


def job_failure(exc: ProviderError) -> Exception:
    """What a job raises for a provider error, keeping the failed call's records: a retry
    after the queue's backoff, or a permanent failure."""
    if exc.is_retryable:
        failure: Exception = RetryJob(str(exc), keep_work=True)
    else:
        failure = PermanentJobError(
            f"AI provider: {exc.message}", reason=f"ai_{exc.kind.value}", keep_work=True
        )
    failure.__cause__ = exc
    return failure


def usage_summary(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None = None,
) -> tuple[UsageTotalsOut, dict[str, UsageTotalsOut], dict[str, UsageTotalsOut]]:
    """Totals, then by task, then by provider/model, of the calls in [since, until)."""
    where: list[Any] = [AIUsage.company_id == company_id]
    if lead_id is not None:
        where.append(AIUsage.lead_id == lead_id)
    if since is not None:
        where.append(AIUsage.created_at >= since)
    if until is not None:
        where.append(AIUsage.created_at < until)
    rows = session.execute(
        select(
            AIUsage.task,
            AIUsage.provider,
            AIUsage.model,
            AIUsage.outcome,
            AIUsage.input_tokens,
            AIUsage.output_tokens,
            AIUsage.cost,
            AIUsage.latency_ms,
        ).where(*where)
    ).all()

    def total(selected: list[Any]) -> UsageTotalsOut:
        ok = [r for r in selected if r.outcome == "ok"]
        return UsageTotalsOut(
            calls=len(selected),
            failed_calls=len(selected) - len(ok),
            input_tokens=sum(r.input_tokens for r in selected),
            output_tokens=sum(r.output_tokens for r in selected),
            cost=sum((Decimal(r.cost) for r in selected), Decimal(0)),
            avg_latency_ms=round(sum(r.latency_ms for r in ok) / len(ok), 1) if ok else None,
        )

    by_task: dict[str, list[Any]] = {}
    by_model: dict[str, list[Any]] = {}
    for row in rows:
        by_task.setdefault(row.task, []).append(row)
        by_model.setdefault(f"{row.provider}/{row.model}", []).append(row)
    return (
        total(list(rows)),
        {k: total(v) for k, v in sorted(by_task.items())},
        {k: total(v) for k, v in sorted(by_model.items())},
    )
