"""The knowledge base's tables: documents and their retrievable passages."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shvya.db.base import Base, IdMixin, utcnow


class AIKBDoc(IdMixin, Base):
    """A knowledge-base document; re-adding the same content (same hash) changes nothing."""

    __tablename__ = "ai_kb_docs"
    __table_args__ = (UniqueConstraint("company_id", "title"),)

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(500))
    source: Mapped[str | None] = mapped_column(String(1000))
    mime_type: Mapped[str] = mapped_column(String(100), default="text/plain")
    content: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    # ready, or pending while a job ingests a large upload, or failed (with `error`).
    status: Mapped[str] = mapped_column(String(16), default="ready")
    error: Mapped[str | None] = mapped_column(Text)
    passage_count: Mapped[int] = mapped_column(default=0)
    # A large upload's file, kept only until the ingest job has read it.
    upload: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AIKBPassage(IdMixin, Base):
    """A retrievable piece of a document: a few hundred tokens under its heading.

    Full-text search reads it through `ai_kb_passages_fts` (SQLite FTS5) or the generated
    `tsv` column (PostgreSQL); dense search through `embedding` (float32 bytes, searched with
    numpy) or, where pgvector exists, `embedding_vec`. Those live in the migration only.
    """

    __tablename__ = "ai_kb_passages"
    __table_args__ = (
        UniqueConstraint("doc_id", "position"),
        Index(None, "company_id", "created_at"),
    )

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    doc_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ai_kb_docs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column()
    heading: Mapped[str] = mapped_column(String(500), default="")
    content: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(default=0)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
