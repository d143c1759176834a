"""Hybrid retrieval: full text fused with dense vectors by reciprocal rank fusion.

Full text is SQLite FTS5 (bm25) or PostgreSQL's tsvector (ts_rank_cd) with a GIN index.
Dense vectors are pgvector's HNSW index where the extension exists, else an exact numpy scan
over the company's stored vectors (kept in memory per company, reloaded when they change).
Each retriever ranks up to CANDIDATES passages; RRF adds 1/(60 + rank) across them, so a
passage both find comes first without calibrating their scores against each other.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session

from shvya.ai.embeddings import EmbeddingBackend, Vectors, from_bytes
from shvya.ai.models import AIKBDoc, AIKBPassage

CANDIDATES = 50
RRF_K = 60
MAX_QUERY_TERMS = 32


@dataclass(frozen=True)
class Hit:
    passage_id: uuid.UUID
    doc_id: uuid.UUID
    title: str
    heading: str
    position: int
    content: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)  # retriever -> 1-based rank


def query_terms(query: str) -> list[str]:
    """Words only: nothing of the query's syntax reaches FTS5 or to_tsquery."""
    seen: list[str] = []
    for term in re.findall(r"\w+", query.casefold()):
        if term not in seen:
            seen.append(term)
    return seen[:MAX_QUERY_TERMS]


def full_text(
    session: Session, *, company_id: uuid.UUID, query: str, limit: int = CANDIDATES
) -> list[uuid.UUID]:
    terms = query_terms(query)
    if not terms:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            text(
                "SELECT id FROM ai_kb_passages, to_tsquery('simple', :q) AS q "
                "WHERE company_id = :company AND tsv @@ q "
                "ORDER BY ts_rank_cd(tsv, q) DESC, id LIMIT :limit"
            ),
            # Any of the words (OR): a question rarely repeats every word of its answer.
            {"q": " | ".join(terms), "company": company_id, "limit": limit},
        )
        return [row[0] for row in rows]
    match = " OR ".join(f'"{term}"' for term in terms)
    rows = session.execute(
        text(
            "SELECT p.id FROM ai_kb_passages_fts f JOIN ai_kb_passages p ON p.rowid = f.rowid "
            "WHERE ai_kb_passages_fts MATCH :match AND p.company_id = :company "
            "ORDER BY bm25(ai_kb_passages_fts), p.id LIMIT :limit"
        ),
        {"match": match, "company": company_id.hex, "limit": limit},
    )
    return [uuid.UUID(str(row[0])) if not isinstance(row[0], uuid.UUID) else row[0] for row in rows]


# --- dense ----------------------------------------------------------------------------------


class _CompanyVectors:
    def __init__(self, signature: tuple[int, Any], ids: list[uuid.UUID], matrix: Vectors) -> None:
        self.signature = signature
        self.ids = ids
        self.matrix = matrix


class VectorIndex:
    """Exact cosine search over each company's passage vectors, held in memory and reloaded
    when the company's passages change (count or newest creation time)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[uuid.UUID, str], _CompanyVectors] = {}
        self._lock = threading.Lock()

    def search(
        self,
        session: Session,
        *,
        company_id: uuid.UUID,
        model: str,
        query_vector: Vectors,
        limit: int = CANDIDATES,
    ) -> list[uuid.UUID]:
        where = (
            AIKBPassage.company_id == company_id,
            AIKBPassage.embedding_model == model,
            AIKBPassage.embedding.is_not(None),
        )
        count, newest = session.execute(
            select(func.count(), func.max(AIKBPassage.created_at)).where(*where)
        ).one()
        if not count:
            return []
        signature = (int(count), newest)
        key = (company_id, model)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached.signature != signature:
            rows = session.execute(
                select(AIKBPassage.id, AIKBPassage.embedding).where(*where)
            ).all()
            ids = [row[0] for row in rows]
            matrix = np.vstack([from_bytes(row[1] or b"") for row in rows]).astype(np.float32)
            cached = _CompanyVectors(signature, ids, matrix)
            with self._lock:
                self._cache[key] = cached
        if cached.matrix.shape[1] != query_vector.shape[0]:
            return []
        scores = cached.matrix @ query_vector
        take = min(limit, len(cached.ids))
        best = np.argpartition(-scores, take - 1)[:take]
        ordered = best[np.argsort(-scores[best], kind="stable")]
        return [cached.ids[i] for i in ordered]


_indexes: dict[int, VectorIndex] = {}


def vector_index(engine: Engine | Connection) -> VectorIndex:
    """One in-memory index per engine (per database)."""
    key = id(engine.engine if isinstance(engine, Connection) else engine)
    if key not in _indexes:
        _indexes[key] = VectorIndex()
    return _indexes[key]


_pgvector: dict[int, bool] = {}


def has_pgvector(session: Session) -> bool:
    """Whether this database's passages have a pgvector column (the migration adds it where
    the extension is available)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    key = id(bind.engine if isinstance(bind, Connection) else bind)
    if key not in _pgvector:
        _pgvector[key] = (
            session.execute(
                text(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = 'ai_kb_passages' "
                    "AND column_name = 'embedding_vec' AND table_schema = current_schema()"
                )
            ).first()
            is not None
        )
    return _pgvector[key]


def vector_literal(vector: Vectors) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def pgvector_search(
    session: Session, *, company_id: uuid.UUID, model: str, query_vector: Vectors, limit: int
) -> list[uuid.UUID]:
    dims = int(query_vector.shape[0])  # an int: safe to write into the statement
    # The HNSW index is filtered after the scan; look deeper than the default 40 so a company
    # with few passages in a shared index still gets its `limit`, and fall back to an exact
    # scan when it does not.
    session.execute(text("SET LOCAL hnsw.ef_search = 200"))
    # Only `dims`, an int, is written into the statement.
    statement = text(
        "SELECT id FROM ai_kb_passages WHERE company_id = :company AND embedding_model = :model "  # noqa: S608
        f"AND vector_dims(embedding_vec) = {dims} "
        f"ORDER BY (embedding_vec::vector({dims})) <=> CAST(:q AS vector({dims})) LIMIT :limit"
    )
    values = {
        "company": company_id,
        "model": model,
        "q": vector_literal(query_vector),
        "limit": limit,
    }
    ids = [row[0] for row in session.execute(statement, values)]
    if len(ids) < limit:
        session.execute(text("SET LOCAL enable_indexscan = off"))
        ids = [row[0] for row in session.execute(statement, values)]
        session.execute(text("SET LOCAL enable_indexscan = on"))
    return ids


def dense(
    session: Session,
    *,
    company_id: uuid.UUID,
    backend: EmbeddingBackend,
    query: str,
    limit: int = CANDIDATES,
) -> list[uuid.UUID]:
    vector = backend.embed([query])[0]
    if has_pgvector(session):
        return pgvector_search(
            session, company_id=company_id, model=backend.name, query_vector=vector, limit=limit
        )
    return vector_index(session.get_bind()).search(
        session, company_id=company_id, model=backend.name, query_vector=vector, limit=limit
    )


def fuse(rankings: dict[str, Sequence[uuid.UUID]]) -> list[tuple[uuid.UUID, float, dict[str, int]]]:
    scores: dict[uuid.UUID, float] = {}
    ranks: dict[uuid.UUID, dict[str, int]] = {}
    for name, ranking in rankings.items():
        for rank, passage_id in enumerate(ranking, start=1):
            scores[passage_id] = scores.get(passage_id, 0.0) + 1.0 / (RRF_K + rank)
            ranks.setdefault(passage_id, {})[name] = rank
    ordered = sorted(scores, key=lambda pid: (-scores[pid], min(ranks[pid].values()), pid))
    return [(pid, scores[pid], ranks[pid]) for pid in ordered]


def search(
    session: Session,
    *,
    company_id: uuid.UUID,
    query: str,
    k: int,
    backend: EmbeddingBackend | None,
) -> list[Hit]:
    rankings: dict[str, Sequence[uuid.UUID]] = {
        "full_text": full_text(session, company_id=company_id, query=query)
    }
    if backend is not None and query.strip():
        rankings["dense"] = dense(session, company_id=company_id, backend=backend, query=query)
    fused = fuse(rankings)[:k]
    if not fused:
        return []
    rows = {
        row.id: row
        for row in session.execute(
            select(
                AIKBPassage.id,
                AIKBPassage.doc_id,
                AIKBPassage.heading,
                AIKBPassage.position,
                AIKBPassage.content,
                AIKBDoc.title,
            )
            .join(AIKBDoc, AIKBDoc.id == AIKBPassage.doc_id)
            .where(
                AIKBPassage.id.in_([pid for pid, _, _ in fused]),
                AIKBPassage.company_id == company_id,
            )
        )
    }
    return [
        Hit(
            passage_id=pid,
            doc_id=rows[pid].doc_id,
            title=rows[pid].title,
            heading=rows[pid].heading,
            position=rows[pid].position,
            content=rows[pid].content,
            score=round(score, 6),
            ranks=ranks,
        )
        for pid, score, ranks in fused
        if pid in rows
    ]


def describe(session: Session, backend: EmbeddingBackend | None) -> str:
    """What /health reports about retrieval."""
    dialect = session.get_bind().dialect.name
    text_part = "postgresql tsvector" if dialect == "postgresql" else "sqlite fts5"
    if backend is None:
        return f"full-text only ({text_part}; no embedding model installed)"
    dense_part = "pgvector hnsw" if has_pgvector(session) else "numpy exact"
    return f"hybrid ({text_part} + {dense_part}, {backend.name})"
