"""The knowledge base (documents, passages, search) and AI generation with usage accounting."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from shvya.ai import retrieval
from shvya.ai.chunking import split_passages
from shvya.ai.documents import blocks_of, extract_text, mime_type_for
from shvya.ai.embeddings import EmbeddingBackend, to_bytes
from shvya.ai.models import AIKBDoc, AIKBPassage, AIModel, AIUsage
from shvya.ai.providers import (
    AITask,
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderErrorKind,
    TextProvider,
)
from shvya.config import Settings
from shvya.db.base import new_id
from shvya.errors import InvalidInput, NotFound
from shvya.events.service import append_event
from shvya.jobs.service import JobType, PermanentJobError, enqueue_job

logger = logging.getLogger(__name__)


class DocumentNotFound(NotFound):
    code = "document_not_found"


class EmptyDocument(InvalidInput):
    code = "empty_document"


# --- documents --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddOutcome:
    document: AIKBDoc
    outcome: str  # created, replaced, unchanged, pending
    job_id: uuid.UUID | None = None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_document(
    session: Session,
    *,
    company_id: uuid.UUID,
    title: str,
    data: bytes,
    filename: str,
    declared_type: str | None,
    settings: Settings,
    backend: EmbeddingBackend | None,
    actor: str,
    now: datetime,
) -> AddOutcome:
    """Add or replace a document by title. The same content again changes nothing; new
    content replaces the old passages in this transaction; a large upload is kept and handed
    to a kb.ingest job, so the request stays short."""
    title = title.strip()
    if not title:
        raise InvalidInput("title: must not be empty", extra={"field": "title"})
    if not data.strip():
        raise EmptyDocument(f"{filename!r} is empty")
    mime_type = mime_type_for(filename, declared_type)
    digest = content_hash(data)
    document = session.scalars(
        select(AIKBDoc).where(AIKBDoc.company_id == company_id, AIKBDoc.title == title)
    ).first()
    if document is not None and document.content_hash == digest and document.status != "failed":
        return AddOutcome(document=document, outcome="unchanged")
    replacing = document is not None
    if document is None:
        document = AIKBDoc(company_id=company_id, title=title, created_at=now, content="")
        session.add(document)
    document.source = filename
    document.mime_type = mime_type
    document.content_hash = digest
    document.error = None
    document.updated_at = now
    session.flush()
    if len(data) > settings.kb_inline_ingest_bytes:
        document.status = "pending"
        document.upload = data
        job_id, _ = enqueue_job(
            session,
            JobType.kb_ingest,
            {"document_id": str(document.id), "hash": digest},
            company_id=company_id,
            idempotency_key=f"kb.ingest:{document.id}:{digest}",
            now=now,
        )
        _event(session, company_id, document, "KBDocumentQueued", actor, now)
        return AddOutcome(document=document, outcome="pending", job_id=job_id)
    ingest(session, document=document, data=data, backend=backend, now=now)
    _event(
        session,
        company_id,
        document,
        "KBDocumentReplaced" if replacing else "KBDocumentAdded",
        actor,
        now,
    )
    return AddOutcome(document=document, outcome="replaced" if replacing else "created")


def ingest(
    session: Session,
    *,
    document: AIKBDoc,
    data: bytes,
    backend: EmbeddingBackend | None,
    now: datetime,
) -> int:
    """Text, passages, full-text rows and vectors of a document, replacing what it had."""
    content = extract_text(data, mime_type=document.mime_type, filename=document.source or "")
    passages = split_passages(blocks_of(content))
    if not passages:
        raise EmptyDocument(f"{document.source or document.title!r} has no text")
    _delete_passages(session, document.id)
    vectors = backend.embed([f"{p.heading}\n{p.content}" for p in passages]) if backend else None
    rows = [
        {
            "company_id": document.company_id,
            "doc_id": document.id,
            "position": p.position,
            "heading": p.heading[:500],
            "content": p.content,
            "token_count": p.token_count,
            "embedding": to_bytes(vectors[i]) if vectors is not None else None,
            "embedding_model": backend.name if backend else None,
            "created_at": now,
        }
        for i, p in enumerate(passages)
    ]
    dialect = session.get_bind().dialect.name
    if vectors is not None and dialect == "postgresql" and retrieval.has_pgvector(session):
        # The pgvector column in the same INSERT: an INSERT then an UPDATE wrote each passage
        # (and each of its index entries) twice.
        session.execute(
            _INSERT_WITH_VECTOR,
            [
                {**row, "id": new_id(), "embedding_vec": retrieval.vector_literal(vectors[i])}
                for i, row in enumerate(rows)
            ],
        )
    else:
        session.add_all([AIKBPassage(**row) for row in rows])
        session.flush()
    if dialect == "sqlite":
        session.execute(
            text(
                "INSERT INTO ai_kb_passages_fts(rowid, heading, content) "
                "SELECT rowid, heading, content FROM ai_kb_passages WHERE doc_id = :doc"
            ),
            {"doc": document.id.hex},
        )
    document.content = content
    document.passage_count = len(rows)
    document.status = "ready"
    document.upload = None
    document.updated_at = now
    return len(rows)


_INSERT_WITH_VECTOR = text(
    "INSERT INTO ai_kb_passages (id, company_id, doc_id, position, heading, content, "
    "token_count, embedding, embedding_model, created_at, embedding_vec) VALUES (:id, "
    ":company_id, :doc_id, :position, :heading, :content, :token_count, :embedding, "
    ":embedding_model, :created_at, CAST(:embedding_vec AS vector))"
).bindparams(  # bound as the model's columns are (UTC timestamps, UUIDs)
    *(
        bindparam(column.name, type_=column.type)
        for column in AIKBPassage.__table__.columns
        if column.name in {"id", "company_id", "doc_id", "embedding", "created_at"}
    )
)


def _delete_passages(session: Session, doc_id: uuid.UUID) -> None:
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            text(
                "DELETE FROM ai_kb_passages_fts WHERE rowid IN "
                "(SELECT rowid FROM ai_kb_passages WHERE doc_id = :doc)"
            ),
            {"doc": doc_id.hex},
        )
    session.execute(delete(AIKBPassage).where(AIKBPassage.doc_id == doc_id))


def _event(
    session: Session,
    company_id: uuid.UUID,
    document: AIKBDoc,
    type_: str,
    actor: str,
    now: datetime,
) -> None:
    append_event(
        session,
        company_id=company_id,
        entity_type="company",
        entity_id=company_id,
        type=type_,
        data={"document_id": str(document.id), "title": document.title},
        actor=actor,
        now=now,
    )


def get_document(session: Session, *, company_id: uuid.UUID, document_id: uuid.UUID) -> AIKBDoc:
    document = session.scalars(
        select(AIKBDoc).where(AIKBDoc.id == document_id, AIKBDoc.company_id == company_id)
    ).first()
    if document is None:
        raise DocumentNotFound(f"document {document_id} not found")
    return document


def list_documents(
    session: Session, *, company_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[AIKBDoc], int]:
    where = (AIKBDoc.company_id == company_id,)
    total = session.scalar(select(func.count()).select_from(AIKBDoc).where(*where)) or 0
    rows = session.scalars(
        select(AIKBDoc).where(*where).order_by(AIKBDoc.title).limit(limit).offset(offset)
    ).all()
    return rows, total


def delete_document(
    session: Session, *, company_id: uuid.UUID, document_id: uuid.UUID, actor: str, now: datetime
) -> AIKBDoc:
    document = get_document(session, company_id=company_id, document_id=document_id)
    _delete_passages(session, document.id)
    session.delete(document)
    _event(session, company_id, document, "KBDocumentDeleted", actor, now)
    return document


def ingest_pending(
    session: Session,
    *,
    company_id: uuid.UUID,
    document_id: uuid.UUID,
    expected_hash: str,
    backend: EmbeddingBackend | None,
    now: datetime,
) -> dict[str, Any]:
    """The kb.ingest job: read the kept upload, make its passages, drop the upload."""
    document = get_document(session, company_id=company_id, document_id=document_id)
    if document.content_hash != expected_hash or document.status != "pending":
        return {"skipped": "the document changed since this job was queued"}
    data = document.upload or b""
    try:
        count = ingest(session, document=document, data=data, backend=backend, now=now)
    except InvalidInput as exc:
        raise PermanentJobError(exc.message, reason=exc.code) from None
    _event(session, company_id, document, "KBDocumentAdded", "kb.ingest", now)
    return {"document_id": str(document.id), "passages": count}


def search_knowledge(
    session: Session,
    *,
    company_id: uuid.UUID,
    query: str,
    k: int,
    backend: EmbeddingBackend | None,
) -> list[retrieval.Hit]:
    return retrieval.search(session, company_id=company_id, query=query, k=k, backend=backend)


# --- models and generation --------------------------------------------------------------------


DEFAULT_PROVIDER = "offline"


def model_settings(session: Session, *, company_id: uuid.UUID, task: AITask) -> AIModel:
    """The company's choice for a task, or the offline default (not stored)."""
    configured = session.scalars(
        select(AIModel).where(AIModel.company_id == company_id, AIModel.task == task.value)
    ).first()
    return configured or AIModel(
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
    append_event(
        session,
        company_id=company_id,
        entity_type="company",
        entity_id=company_id,
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
    checkpoint: Callable[[], None] | None = None,
) -> Completion:
    """Ask the company's provider for this task, and record what the call cost.

    In a job, pass its `checkpoint`: the work so far is committed before a network provider
    is called, and a failed call's usage row and a bad key's company alert are kept although
    the job's own work is rolled back when it fails.

    Raises ProviderError: the caller (a job) retries the retryable ones with the queue's
    backoff; fail_on_provider_error() turns the others into a permanent job failure.
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
    provider = make_provider(chosen.provider, settings)
    if checkpoint is not None and chosen.provider != DEFAULT_PROVIDER:
        # No transaction stays open across a network call (DESIGN.md rule 2); the offline
        # provider runs in this process and needs none.
        checkpoint()
    try:
        completion = provider.complete(request)
    except ProviderError as exc:
        usage.outcome = exc.kind.value
        session.add(usage)
        if exc.kind is ProviderErrorKind.auth:
            append_event(
                session,
                company_id=company_id,
                entity_type="company",
                entity_id=company_id,
                type="AIProviderAuthFailed",
                data={"provider": chosen.provider, "error": exc.message[:300]},
                now=now,
            )
        if checkpoint is not None:
            checkpoint()
        raise
    usage.model = completion.model
    usage.input_tokens = completion.input_tokens
    usage.output_tokens = completion.output_tokens
    usage.latency_ms = completion.latency_ms
    usage.cost = (
        Decimal(completion.input_tokens) * chosen.price_per_1k_input
        + Decimal(completion.output_tokens) * chosen.price_per_1k_output
    ) / 1000
    session.add(usage)
    session.flush()
    return completion


def job_failure(exc: ProviderError) -> Exception:
    """What a job raises for a provider error: itself to retry, or a permanent failure."""
    if exc.is_retryable:
        return exc
    return PermanentJobError(f"AI provider: {exc.message}", reason=f"ai_{exc.kind.value}")


@dataclass(frozen=True)
class UsageTotals:
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    avg_latency_ms: float | None


def usage_summary(
    session: Session,
    *,
    company_id: uuid.UUID,
    lead_id: uuid.UUID | None,
    since: datetime | None,
) -> tuple[UsageTotals, dict[str, UsageTotals], dict[str, UsageTotals]]:
    """Totals, then by task, then by provider/model."""
    where: list[Any] = [AIUsage.company_id == company_id]
    if lead_id is not None:
        where.append(AIUsage.lead_id == lead_id)
    if since is not None:
        where.append(AIUsage.created_at >= since)
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

    def total(selected: list[Any]) -> UsageTotals:
        ok = [r for r in selected if r.outcome == "ok"]
        return UsageTotals(
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
