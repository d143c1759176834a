"""The knowledge base: documents in, passages out, and the search the AI answers from."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.orm import Session

from shvya.ai.lexicon import (
    CONCEPTS,
    compared_items,
    expand,
    in_language,
)
from shvya.ai.providers import ProviderError
from shvya.ai.understanding import detect_language
from shvya.ai.usage import AIUsage
from shvya.config import Settings
from shvya.db.base import new_id
from shvya.db.phases import Call, Phases
from shvya.db.queries import get_for_company, page_of
from shvya.errors import InvalidInput, NotFound
from shvya.events.service import append_company_event
from shvya.jobs.service import JobType, PermanentJobError, enqueue_job
from shvya.knowledge import retrieval
from shvya.knowledge.chunking import Passage, split_passages
from shvya.knowledge.documents import blocks_of, extract_text, mime_type_for
from shvya.knowledge.embeddings import (
    Embedded,
    EmbeddingBackend,
    MeteredBackend,
    Vectors,
    embed_call,
    to_bytes,
)
from shvya.knowledge.models import AIKBDoc, AIKBPassage
from shvya.schemas import PageRequest


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


@dataclass(frozen=True)
class DocumentFile:
    """A document as it is handed in: an upload, a JSON body, a file on disk."""

    title: str
    data: bytes
    filename: str
    content_type: str | None  # as declared by the sender; the filename decides without one


def add_document(
    session: Session,
    *,
    company_id: uuid.UUID,
    file: DocumentFile,
    settings: Settings,
    backend: EmbeddingBackend | None,
    actor: str,
    now: datetime,
) -> Phases[AddOutcome]:
    """Add or replace a document by title. The same content again changes nothing; new
    content replaces the old passages; a large upload is kept and handed to a kb.ingest job,
    so the request stays short. The passages' embeddings are the one call, made with no
    transaction open; nothing is written before it."""
    title, data, filename = file.title.strip(), file.data, file.filename
    if not title:
        raise InvalidInput("title: must not be empty", extra={"field": "title"})
    if not data.strip():
        raise EmptyDocument(f"{filename!r} is empty")
    mime_type = mime_type_for(filename, file.content_type)
    digest = content_hash(data)
    document = _document_titled(session, company_id=company_id, title=title)
    if document is not None and document.content_hash == digest and document.status != "failed":
        return AddOutcome(document=document, outcome="unchanged")
    upload = Upload(
        company_id=company_id, title=title, filename=filename, mime_type=mime_type, digest=digest
    )
    if len(data) > settings.kb_inline_ingest_bytes:
        document = _describe(session, document, upload, now)
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
    content, passages = read_passages(data, mime_type=mime_type, filename=filename, title=title)
    vectors = yield from embed_passages(
        session, backend, passages, company_id=company_id, task=INGEST_TASK, now=now
    )
    # Looked up again: the document may have changed while the embeddings were made.
    document = _document_titled(session, company_id=company_id, title=title)
    replacing = document is not None
    document = _describe(session, document, upload, now)
    store_passages(
        session, document=document, content=content, passages=passages, vectors=vectors, now=now
    )
    _event(
        session,
        company_id,
        document,
        "KBDocumentReplaced" if replacing else "KBDocumentAdded",
        actor,
        now,
    )
    return AddOutcome(document=document, outcome="replaced" if replacing else "created")


@dataclass(frozen=True)
class Upload:
    """What describes a document's content, whatever its passages."""

    company_id: uuid.UUID
    title: str
    filename: str
    mime_type: str
    digest: str


def _document_titled(session: Session, *, company_id: uuid.UUID, title: str) -> AIKBDoc | None:
    return session.scalars(
        select(AIKBDoc).where(AIKBDoc.company_id == company_id, AIKBDoc.title == title)
    ).first()


def _describe(session: Session, document: AIKBDoc | None, upload: Upload, now: datetime) -> AIKBDoc:
    """The document's row, made or updated to describe this upload."""
    if document is None:
        document = AIKBDoc(
            company_id=upload.company_id, title=upload.title, created_at=now, content=""
        )
        session.add(document)
    document.source = upload.filename
    document.mime_type = upload.mime_type
    document.content_hash = upload.digest
    document.error = None
    document.updated_at = now
    session.flush()
    return document


def read_passages(
    data: bytes, *, mime_type: str, filename: str, title: str
) -> tuple[str, list[Passage]]:
    """A document's text and its passages (no database, no network)."""
    content = extract_text(data, mime_type=mime_type, filename=filename)
    passages = split_passages(blocks_of(content))
    if not passages:
        raise EmptyDocument(f"{filename or title!r} has no text")
    return content, passages


@dataclass(frozen=True)
class PassageVectors:
    model: str
    vectors: Vectors


# The ai_usage task of each embeddings call: a document's passages, a question.
INGEST_TASK = "kb.ingest"
SEARCH_TASK = "kb.search"


def embed(
    session: Session,
    backend: EmbeddingBackend,
    texts: list[str],
    *,
    company_id: uuid.UUID,
    task: str,
    now: datetime,
    lead_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> Phases[Vectors]:
    """The embeddings of `texts`: a call made outside any transaction. A provider's call
    (OpenAI's) is recorded like a model call: an ai_usage row with the tokens it counted,
    written after the call, in the record phase (docs/architecture.md, "Phases of a job that
    calls out"); a failed one too, with its failure's kind, kept where the caller keeps the
    work of a failure."""
    usage: AIUsage | None = None
    if isinstance(backend, MeteredBackend):
        usage = AIUsage(
            company_id=company_id,
            lead_id=lead_id,
            job_id=job_id,
            task=task,
            provider=backend.provider,
            model=backend.model,
            created_at=now,
        )
    try:
        result: Embedded = yield Call(f"embed:{backend.name}", lambda: embed_call(backend, texts))
    except ProviderError as exc:
        if usage is not None:
            usage.outcome = exc.kind.value
            session.add(usage)
        raise
    if usage is not None:
        usage.input_tokens = result.input_tokens
        usage.latency_ms = result.latency_ms
        session.add(usage)
    return result.vectors


def embed_passages(
    session: Session,
    backend: EmbeddingBackend | None,
    passages: list[Passage],
    *,
    company_id: uuid.UUID,
    task: str,
    now: datetime,
    job_id: uuid.UUID | None = None,
) -> Phases[PassageVectors | None]:
    """The passages' embeddings (embed: a call, and its usage row)."""
    if backend is None:
        return None
    texts = [f"{p.heading}\n{p.content}" for p in passages]
    vectors = yield from embed(
        session, backend, texts, company_id=company_id, task=task, now=now, job_id=job_id
    )
    return PassageVectors(model=backend.name, vectors=vectors)


def store_passages(
    session: Session,
    *,
    document: AIKBDoc,
    content: str,
    passages: list[Passage],
    vectors: PassageVectors | None,
    now: datetime,
) -> int:
    """A document's passages, full-text rows and vectors, replacing what it had."""
    _delete_passages(session, document.id)
    rows = [
        {
            "company_id": document.company_id,
            "doc_id": document.id,
            "position": p.position,
            "heading": p.heading[:500],
            "content": p.content,
            "token_count": p.token_count,
            "embedding": to_bytes(vectors.vectors[i]) if vectors is not None else None,
            "embedding_model": vectors.model if vectors is not None else None,
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
                {
                    **row,
                    "id": new_id(),
                    "embedding_vec": retrieval.vector_literal(vectors.vectors[i]),
                }
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
    append_company_event(
        session,
        company_id=company_id,
        type=type_,
        data={"document_id": str(document.id), "title": document.title},
        actor=actor,
        now=now,
    )


def get_document(session: Session, *, company_id: uuid.UUID, document_id: uuid.UUID) -> AIKBDoc:
    return get_for_company(
        session, AIKBDoc, document_id, company_id=company_id, missing=DocumentNotFound
    )


def list_documents(
    session: Session, *, company_id: uuid.UUID, page: PageRequest
) -> tuple[Sequence[AIKBDoc], int]:
    return page_of(
        session, AIKBDoc, AIKBDoc.company_id == company_id, order_by=(AIKBDoc.title,), page=page
    )


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
    job_id: uuid.UUID | None = None,
) -> Phases[dict[str, Any]]:
    """The kb.ingest job: read the kept upload, make its passages, drop the upload."""
    document = get_document(session, company_id=company_id, document_id=document_id)
    if document.content_hash != expected_hash or document.status != "pending":
        return {"skipped": "the document changed since this job was queued"}
    try:
        content, passages = read_passages(
            document.upload or b"",
            mime_type=document.mime_type,
            filename=document.source or "",
            title=document.title,
        )
    except InvalidInput as exc:
        raise PermanentJobError(exc.message, reason=exc.code) from None
    vectors = yield from embed_passages(
        session,
        backend,
        passages,
        company_id=company_id,
        task=INGEST_TASK,
        now=now,
        job_id=job_id,
    )
    # The document again, locked: it may have been replaced or deleted during the call.
    current = session.scalars(
        select(AIKBDoc)
        .where(AIKBDoc.id == document_id, AIKBDoc.company_id == company_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if current is None or current.content_hash != expected_hash or current.status != "pending":
        return {"skipped": "the document changed while its passages were made"}
    count = store_passages(
        session, document=current, content=content, passages=passages, vectors=vectors, now=now
    )
    _event(session, company_id, current, "KBDocumentAdded", "kb.ingest", now)
    return {"document_id": str(current.id), "passages": count}


LANGUAGE_SAMPLE = 8  # passages read to tell the knowledge base's language


def knowledge_language(session: Session, *, company_id: uuid.UUID) -> str | None:
    """The language the company's knowledge base is written in, read from a few of its
    passages (en, es, hi or hinglish); None when it has none."""
    sample = session.scalars(
        select(AIKBPassage.content)
        .where(AIKBPassage.company_id == company_id)
        .order_by(AIKBPassage.doc_id, AIKBPassage.position)
        .limit(LANGUAGE_SAMPLE)
    ).all()
    return detect_language(" ".join(sample)) if sample else None


def search_knowledge(
    session: Session,
    *,
    company_id: uuid.UUID,
    query: str,
    k: int,
    backend: EmbeddingBackend | None,
    now: datetime,
    lead_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    rewritten: str | None = None,
    language: str | None = None,
) -> Phases[list[retrieval.Hit]]:
    """The passages that best answer `query`; the query's embedding is a call (embed).

    The question is also searched as the sales lexicon reads it in the knowledge base's
    `language` (read from the passages when not given) and, when a model rewrote it into that
    language, as `rewritten`; a comparison's items are searched one by one (docs/ai.md 5.6).
    """
    if language is None:
        language = knowledge_language(session, company_id=company_id) or "en"
    # The question with the words the lexicon adds; none when it adds none, as searching the
    # same words twice would only weigh full text over the dense ranking.
    own = set(retrieval.query_terms(query))
    added = [word for word in expand(query, language).split() if word not in own]
    wordings = {"lexicon": f"{query} {' '.join(added)}" if added else ""}
    if rewritten and rewritten.strip() and rewritten.strip() != query.strip():
        wordings["rewritten"] = rewritten.strip()
    compared = compared_items(query) or compared_items(wordings.get("rewritten", ""))
    items = [" ".join(_item_words(item, language)) for item in compared]
    embedding, others = None, {}
    if backend is not None and query.strip():
        texts = [query, *([wordings["rewritten"]] if "rewritten" in wordings else [])]
        vectors = yield from embed(
            session,
            backend,
            texts,
            company_id=company_id,
            task=SEARCH_TASK,
            now=now,
            lead_id=lead_id,
            job_id=job_id,
        )
        embedding = retrieval.QueryEmbedding(model=backend.name, vector=vectors[0])
        if len(texts) > 1:
            others["rewritten"] = retrieval.QueryEmbedding(model=backend.name, vector=vectors[1])
    return retrieval.search(
        session,
        company_id=company_id,
        query=query,
        k=k,
        embedding=embedding,
        wordings=wordings,
        wording_embeddings=others,
        items=items,
    )


def _item_words(item: str, language: str) -> list[str]:
    """A compared item's words for full text: a lexicon concept in the knowledge base's
    language, any other word as it is."""
    return [
        word
        for part in item.split()
        for word in (in_language(part, language) if part in CONCEPTS else [part])
    ]
