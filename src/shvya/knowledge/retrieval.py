"""Hybrid retrieval: full text fused with dense vectors by reciprocal rank fusion.

Full text is SQLite FTS5 (bm25) or PostgreSQL's tsvector (ts_rank) with a GIN index, over
the question's words less its stop words (English, Spanish, Hinglish): a word such as "do",
"we" or "with" is in most passages, so it made every question rank most of the knowledge
base while telling nothing about which passage answers it.
Dense vectors are pgvector's HNSW index where the extension exists, else an exact numpy scan
over the company's stored vectors (kept in memory per company, reloaded when its documents
change).
Each retriever ranks up to CANDIDATES passages; RRF adds 1/(60 + rank) across them, so a
passage both find comes first without calibrating their scores against each other.
A question may be searched in several wordings (docs/ai.md 5.6 and 8): as written, as the
sales lexicon reads it in the knowledge base's language, as a model rewrote it; each wording
is one more ranking in the fusion. A comparison's items are searched one by one, and each
item's best passage is kept among the results, so "Basic or Premium?" sees both plans.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, Integer, case, cast, extract, func, select, text
from sqlalchemy.orm import Session

from shvya.ai.lexicon import tokens
from shvya.ai.understanding import STOPWORDS
from shvya.knowledge.embeddings import EmbeddingBackend, Vectors, from_bytes
from shvya.knowledge.models import AIKBDoc, AIKBPassage

CANDIDATES = 50
RRF_K = 60
MAX_QUERY_TERMS = 32
# SQLite: FTS5 ranks its whole index (every company's passages) and the company's best are
# kept; this many are ranked first, and the query is run without the cap only when fewer
# than `limit` of them are the company's.
FTS_DEPTH = 4


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


def _words(query: str) -> list[str]:
    seen: list[str] = []
    for term in tokens(query, symbols=False):  # words only: nothing of a query's syntax
        if term not in seen:
            seen.append(term)
    return seen


def query_terms(query: str) -> list[str]:
    """Words only: nothing of the query's syntax reaches FTS5 or to_tsquery."""
    return _words(query)[:MAX_QUERY_TERMS]


def search_terms(query: str) -> list[str]:
    """The words full text searches for: the query's words less its stop words, or all of
    them when it has nothing else ("what do you have?" still finds something)."""
    words = _words(query)
    content = [word for word in words if word not in STOPWORDS]
    return (content or words)[:MAX_QUERY_TERMS]


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def full_text(
    session: Session, *, company_id: uuid.UUID, query: str, limit: int = CANDIDATES
) -> list[uuid.UUID]:
    terms = search_terms(query)
    if not terms:
        return []
    if session.get_bind().dialect.name == "postgresql":
        # ts_rank, not ts_rank_cd (which also weighs how close the words are): as good an
        # order here, at a third of the cost.
        found = session.execute(
            text(
                "SELECT id FROM ai_kb_passages, to_tsquery('simple', :q) AS q "
                "WHERE company_id = :company AND tsv @@ q "
                "ORDER BY ts_rank(tsv, q) DESC, id LIMIT :limit"
            ),
            # Any of the words (OR): a question rarely repeats every word of its answer.
            {"q": " | ".join(terms), "company": company_id, "limit": limit},
        )
        return [row[0] for row in found]
    values = {
        "match": " OR ".join(f'"{term}"' for term in terms),
        "company": company_id.hex,
        "limit": limit,
    }
    # The best matches of the index first, then the company's among them: bm25() is computed
    # for every match either way, but only `depth` rows are looked up in ai_kb_passages.
    rows = session.execute(
        text(
            "SELECT p.id FROM (SELECT rowid, bm25(ai_kb_passages_fts) AS score "
            "FROM ai_kb_passages_fts WHERE ai_kb_passages_fts MATCH :match "
            "ORDER BY score LIMIT :depth) AS f "
            "JOIN ai_kb_passages p ON p.rowid = f.rowid WHERE p.company_id = :company "
            "ORDER BY f.score, p.id LIMIT :limit"
        ),
        {**values, "depth": limit * FTS_DEPTH},
    ).all()
    if len(rows) < limit:  # other companies' passages took places, or few matched at all
        rows = session.execute(
            text(
                "SELECT p.id FROM ai_kb_passages_fts f "
                "JOIN ai_kb_passages p ON p.rowid = f.rowid "
                "WHERE ai_kb_passages_fts MATCH :match AND p.company_id = :company "
                "ORDER BY bm25(ai_kb_passages_fts), p.id LIMIT :limit"
            ),
            values,
        ).all()
    return [_as_uuid(row[0]) for row in rows]


# --- dense ----------------------------------------------------------------------------------


def kb_signature(session: Session, company_id: uuid.UUID) -> tuple[Any, ...]:
    """A value that changes whenever the company's passages do (in this process or another),
    read from its few document rows rather than its many passages.

    Passages change only by `service.ingest` (a document added or replaced inline, or a
    kb.ingest job finishing a large upload), which sets the document's `updated_at` to the
    time of the change, its `passage_count` and its `status`, and by deleting a document,
    which changes the count. The sum of the times, not only the latest, also catches an
    ingest committed after a newer one.
    """
    if session.get_bind().dialect.name == "postgresql":
        times: Any = func.sum(extract("epoch", AIKBDoc.updated_at))  # numeric: exact
    else:  # julianday() keeps milliseconds; summed as whole milliseconds, exactly
        milliseconds = (func.julianday(AIKBDoc.updated_at) - 2440587.5) * 86_400_000
        times = func.sum(cast(milliseconds, Integer))
    row = session.execute(
        select(
            func.count(),
            func.sum(AIKBDoc.passage_count),
            func.max(AIKBDoc.updated_at),
            times,
            func.sum(case((AIKBDoc.status == "ready", 1), else_=0)),
        ).where(AIKBDoc.company_id == company_id)
    ).one()
    return tuple(row)


class _CompanyVectors:
    def __init__(self, signature: tuple[Any, ...], ids: list[uuid.UUID], matrix: Vectors) -> None:
        self.signature = signature
        self.ids = ids
        self.matrix = matrix


class VectorIndex:
    """Exact cosine search over each company's passage vectors, held in memory and reloaded
    when the company's documents change (see kb_signature)."""

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
        # Read before the vectors: a change committed in between makes the next search reload.
        signature = kb_signature(session, company_id)
        key = (company_id, model)
        if not signature[0]:  # no documents
            with self._lock:
                self._cache.pop(key, None)
            return []
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached.signature != signature:
            rows = session.execute(
                select(AIKBPassage.id, AIKBPassage.embedding).where(
                    AIKBPassage.company_id == company_id,
                    AIKBPassage.embedding_model == model,
                    AIKBPassage.embedding.is_not(None),
                )
            ).all()
            ids = [row[0] for row in rows]
            matrix = (
                np.vstack([from_bytes(row[1] or b"") for row in rows]).astype(np.float32)
                if rows
                else np.zeros((0, query_vector.shape[0]), dtype=np.float32)
            )
            cached = _CompanyVectors(signature, ids, matrix)
            with self._lock:
                self._cache[key] = cached
        if not cached.ids or cached.matrix.shape[1] != query_vector.shape[0]:
            return []
        # einsum, not `@`: BLAS splits this product over threads, which on a busy machine
        # wait for each other (p99 12 ms against 0.5 ms in one thread, for 10,000 x 256).
        scores = np.einsum("ij,j->i", cached.matrix, query_vector.astype(np.float32, copy=False))
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


@dataclass(frozen=True)
class QueryEmbedding:
    """A question's vector, and the model whose passages it can be compared with."""

    model: str
    vector: Vectors


def embed_query(backend: EmbeddingBackend, query: str) -> QueryEmbedding:
    """The question's embedding: a call (a network one for OpenAI), made before the search and
    outside any transaction."""
    return QueryEmbedding(model=backend.name, vector=backend.embed([query])[0])


def dense(
    session: Session,
    *,
    company_id: uuid.UUID,
    embedding: QueryEmbedding,
    limit: int = CANDIDATES,
) -> list[uuid.UUID]:
    model, vector = embedding.model, embedding.vector
    if has_pgvector(session):
        return pgvector_search(
            session, company_id=company_id, model=model, query_vector=vector, limit=limit
        )
    return vector_index(session.get_bind()).search(
        session, company_id=company_id, model=model, query_vector=vector, limit=limit
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


def _with_kept(
    fused: list[tuple[uuid.UUID, float, dict[str, int]]], kept: list[uuid.UUID], k: int
) -> list[tuple[uuid.UUID, float, dict[str, int]]]:
    """The best k of `fused`, with every passage of `kept` among them, in fused order."""
    chosen = [entry for entry in fused if entry[0] in kept]
    for entry in fused:
        if len(chosen) >= k:
            break
        if entry not in chosen:
            chosen.append(entry)
    return sorted(chosen, key=fused.index)


def search(
    session: Session,
    *,
    company_id: uuid.UUID,
    query: str,
    k: int,
    embedding: QueryEmbedding | None,
    wordings: dict[str, str] | None = None,
    wording_embeddings: dict[str, QueryEmbedding] | None = None,
    items: Sequence[str] = (),
) -> list[Hit]:
    """Full text fused with the dense ranking of `embedding` (embed_query(); None: full text
    alone), and with those of the question's other `wordings` (name -> text, e.g.
    "rewritten", "lexicon"). Each of `items` (what a comparison compares) is searched alone,
    and its best passage is kept among the k."""
    rankings: dict[str, Sequence[uuid.UUID]] = {
        "full_text": full_text(session, company_id=company_id, query=query)
    }
    if embedding is not None and query.strip():
        rankings["dense"] = dense(session, company_id=company_id, embedding=embedding)
    for name, wording in (wordings or {}).items():
        if wording.strip():
            rankings[f"full_text:{name}"] = full_text(session, company_id=company_id, query=wording)
    for name, other in (wording_embeddings or {}).items():
        rankings[f"dense:{name}"] = dense(session, company_id=company_id, embedding=other)
    kept: list[uuid.UUID] = []
    for item in items:
        found = full_text(session, company_id=company_id, query=item, limit=1)
        if found and found[0] not in kept:
            kept.append(found[0])
            rankings[f"item:{item}"] = found
    fused = _with_kept(fuse(rankings), kept[:k], k)
    if not fused:
        return []
    # By primary key alone, the company checked here: with the company in the WHERE clause
    # SQLite (no statistics) read the company's whole index instead.
    rows = {
        row.id: row
        for row in session.execute(
            select(
                AIKBPassage.id,
                AIKBPassage.company_id,
                AIKBPassage.doc_id,
                AIKBPassage.heading,
                AIKBPassage.position,
                AIKBPassage.content,
                AIKBDoc.title,
            )
            .join(AIKBDoc, AIKBDoc.id == AIKBPassage.doc_id)
            .where(AIKBPassage.id.in_([pid for pid, _, _ in fused]))
        )
        if _as_uuid(row.company_id) == company_id
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
