"""Knowledge-base retrieval (issue 6): recall@5 and query latency of SHVYA's search, beside
the bm25s library on the same corpus in the same run, and ingest throughput.

The corpus (bench/retrieval_corpus.py, from a seed) is a sales knowledge base of fictional
vendors: 10,000 passages in about 1,100 markdown documents (one per product, one of
policies per vendor), each `##` section one passage of specific facts, and 500 labelled
questions: 40% worded like their passage, 35% paraphrased, 25% with typing mistakes or other
word forms. Each question has one relevant passage; recall@5 is the share of questions whose
passage is among the five returned.

For each store (SQLite; this machine's PostgreSQL, which has no pgvector, so dense search is
SHVYA's exact numpy scan; and, when the `pgserver` package can start one, a private PostgreSQL
with pgvector, so dense search is its HNSW index), in fresh databases:

1. ingest: every document through `shvya.knowledge.service.add_document` (inline, its
   phases committed per document as POST /kb/documents commits them), once without
   embeddings and once with the WordLlama embeddings, each into an empty store; passages per second;
2. search, through `shvya.knowledge.retrieval.search` in a new session per question, as
   GET /kb/search does: full text alone (no embedding backend) and hybrid (full text and
   dense fused by RRF); dense alone too (`retrieval.dense`), to read the hybrid by;
3. the anchor: bm25s (its tokenizer, English stop words; no stemmer, PyStemmer is not
   installed) indexing the same passage texts (heading and content, as SHVYA stores them),
   top 5 per question, timed with its query tokenization.

Questions run one at a time, the methods taking turns question by question (the order
rotating), so a busy moment of the machine is spread over all of them. A warm-up of the first
questions is not counted; the first hybrid question of a store, which loads the vectors into
memory, is reported apart. On PostgreSQL the tables are analysed after ingest, as autovacuum
would do on a server where it is on.

    make bench                                                  # runs this after the others
    .venv/bin/python bench/retrieval.py                         # ~6 minutes
    .venv/bin/python bench/retrieval.py --passages 1000 --queries 100   # smoke run, ~20 s
    .venv/bin/python bench/retrieval.py --only sqlite,postgresql        # without pgserver
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import retrieval_corpus
from common import (
    DEFAULT_PG_URL,
    REPO_DIR,
    ShvyaDb,
    fmt_ratio,
    install_signal_handlers,
    machine_description,
    markdown_table,
    migrated_shvya_db,
    now,
    percentile,
    pg_schema,
    say,
    wait_for_quiet_machine,
)
from sqlalchemy import create_engine, make_url, select, text

from shvya.config import Settings
from shvya.db.phases import run_phases
from shvya.knowledge import retrieval
from shvya.knowledge.chunking import split_passages
from shvya.knowledge.documents import blocks_of
from shvya.knowledge.embeddings import EmbeddingBackend, Vectors, embedding_backend
from shvya.knowledge.models import AIKBPassage
from shvya.knowledge.service import DocumentFile, add_document

STORES = ("sqlite", "postgresql", "pgvector")
STORE_LABELS = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "pgvector": "PostgreSQL + pgvector",
}
K = 5
# The targets.
TARGET_P99_MS = 50.0


# --- the machine -------------------------------------------------------------------------------


class BusyMeter:
    """How busy the machine's cores were between start() and percent() (from /proc/stat)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        except (OSError, ValueError):
            return 0, 0
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)

    def percent(self) -> float:
        busy, total = self._read()
        db, dt = busy - self._start[0], total - self._start[1]
        return 100 * db / dt if dt > 0 else float("nan")


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src")
    return f"{commit} (src/ has uncommitted changes)" if dirty else commit


def package_version(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "not installed"


# --- stores ------------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_url(tag: str) -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix=f"shvya-bench-retrieval-{tag}-")
    try:
        yield f"sqlite:///{directory}/shvya.db"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def postgresql_url(base_url: str, tag: str) -> Iterator[str]:
    with pg_schema(base_url, f"retrieval_{tag}") as schema:  # bench_retrieval_<tag>_<hex>
        yield schema.url


@contextlib.contextmanager
def pgvector_server() -> Iterator[str]:
    """A private PostgreSQL with pgvector from the `pgserver` package; its admin URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver

        directory = tempfile.mkdtemp(prefix="shvya-bench-pgvector-")
        try:
            server = pgserver.get_server(directory, cleanup_mode="delete")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={directory}"
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def pgvector_database(admin_url: str, tag: str) -> Iterator[str]:
    """A fresh database (not a schema: the extension's type lives in the schema it is
    created in), dropped at the end."""
    name = f"bench_retrieval_{tag}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.replace("/postgres?", f"/{name}?", 1)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# Engines stay referenced until the end: shvya.knowledge.retrieval caches per id(engine) (its vector
# index and whether the database has pgvector), and a collected engine's id can be reused by
# the next store's engine, which would then be told the wrong thing.
KEEP_ALIVE: list[Any] = []


@contextlib.contextmanager
def fresh_store(
    kind: str, tag: str, *, pg_url: str, pgvector_admin: str | None
) -> Iterator[ShvyaDb]:
    if kind == "sqlite":
        opener = sqlite_url(tag)
    elif kind == "postgresql":
        opener = postgresql_url(pg_url, tag)
    else:
        assert pgvector_admin is not None
        opener = pgvector_database(pgvector_admin, tag)
    with opener as url:
        db = migrated_shvya_db(url)
        KEEP_ALIVE.append(db.engine)
        try:
            yield db
        finally:
            db.dispose()


def server_version(db: ShvyaDb) -> str:
    if not db.is_postgresql:
        return f"SQLite {sqlite3.sqlite_version}"
    with db.engine.connect() as conn:
        server = conn.execute(text("SHOW server_version")).scalar_one()
        vector = conn.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
    return f"PostgreSQL {server}" + (f", pgvector {vector}" if vector else ", no pgvector")


# --- ingest ------------------------------------------------------------------------------------


class TimedBackend:
    """The embedding backend, counting the seconds spent embedding."""

    def __init__(self, inner: EmbeddingBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimensions = inner.dimensions
        self.seconds = 0.0

    def embed(self, texts: Sequence[str]) -> Vectors:
        start = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - start


@dataclass
class IngestFigures:
    store: str
    embeddings: str
    documents: int
    passages: int
    seconds: float
    embed_seconds: float
    busy_percent: float
    load: float

    @property
    def rate(self) -> float:
        return self.passages / self.seconds if self.seconds else float("nan")


def ingest(
    db: ShvyaDb,
    documents: Sequence[retrieval_corpus.Document],
    *,
    store: str,
    backend: EmbeddingBackend | None,
) -> IngestFigures:
    settings = Settings(_env_file=None, database_url=db.url)  # type: ignore[call-arg]
    timed = TimedBackend(backend) if backend is not None else None
    label = f"with {backend.name}" if backend is not None else "without embeddings"
    load = wait_for_quiet_machine(max_wait_s=60)
    say(f"  ingest {label}: {len(documents):,} documents (load average {load:.2f})")
    meter = BusyMeter()
    passages = 0
    start = last_report = time.perf_counter()
    for number, document in enumerate(documents, start=1):
        with db.session_factory() as session:
            adding = add_document(
                session,
                company_id=db.company_id,
                file=DocumentFile(
                    title=document.title,
                    data=document.markdown.encode(),
                    filename=f"kb-{number}.md",
                    content_type=None,
                ),
                settings=settings,
                backend=timed,
                actor="bench",
                now=now(),
            )
            outcome = run_phases(adding, session=session, end_prepare=session.commit)
            if outcome.outcome != "created":
                raise RuntimeError(f"{document.title!r}: {outcome.outcome}, expected created")
            passages += outcome.document.passage_count
            session.commit()
        if time.perf_counter() - last_report > 10 and number < len(documents):
            last_report = time.perf_counter()
            elapsed = last_report - start
            say(
                f"    {number:,} documents, {passages:,} passages in {elapsed:.0f} s "
                f"({passages / elapsed:,.0f} passages/s)"
            )
    seconds = time.perf_counter() - start
    figures = IngestFigures(
        store=store,
        embeddings=backend.name if backend is not None else "none",
        documents=len(documents),
        passages=passages,
        seconds=seconds,
        embed_seconds=timed.seconds if timed is not None else 0.0,
        busy_percent=meter.percent(),
        load=load,
    )
    say(
        f"    {passages:,} passages in {seconds:.1f} s: {figures.rate:,.0f} passages/s"
        + (f" (embedding {figures.embed_seconds:.1f} s of it)" if timed is not None else "")
    )
    if db.is_postgresql:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE ai_kb_passages"))
            conn.execute(text("ANALYZE ai_kb_docs"))
    return figures


def passage_ids(db: ShvyaDb, expected: dict[str, str]) -> dict[uuid.UUID, str]:
    """Passage id -> label, checking that SHVYA stored exactly the expected passages."""
    with db.session_factory() as session:
        rows = session.execute(
            select(AIKBPassage.id, AIKBPassage.heading, AIKBPassage.content).where(
                AIKBPassage.company_id == db.company_id
            )
        ).all()
    labels = {row.id: row.heading for row in rows}
    stored = {row.heading: row.content for row in rows}
    if len(rows) != len(expected) or stored != expected:
        missing = len(set(expected) - set(stored))
        raise RuntimeError(
            f"stored {len(rows)} passages, expected {len(expected)} ({missing} headings missing,"
            " or contents differ): the corpus no longer maps one section to one passage"
        )
    return labels


# --- searching ---------------------------------------------------------------------------------


@dataclass
class Method:
    name: str
    search: Callable[[str], list[str]]  # question -> labels of the top K passages
    describe: str = ""
    latencies: list[float] = field(default_factory=list)
    results: list[list[str]] = field(default_factory=list)
    cold_ms: float | None = None

    def run(self, question: str) -> list[str]:
        start = time.perf_counter()
        labels = self.search(question)
        self.latencies.append(time.perf_counter() - start)
        self.results.append(labels)
        return labels


class Bm25sAnchor:
    def __init__(self, labels: list[str], texts: list[str]) -> None:
        self.labels = labels
        start = time.perf_counter()
        self.retriever = bm25s.BM25()
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        self.retriever.index(tokens, show_progress=False)
        self.index_seconds = time.perf_counter() - start

    def search(self, question: str) -> list[str]:
        tokens = bm25s.tokenize(question, stopwords="en", show_progress=False)
        documents, _scores = self.retriever.retrieve(tokens, k=K, show_progress=False)
        return [self.labels[i] for i in documents[0]]


def shvya_methods(
    db: ShvyaDb, labels: dict[uuid.UUID, str], backend: EmbeddingBackend
) -> list[Method]:
    def searcher(with_backend: EmbeddingBackend | None) -> Callable[[str], list[str]]:
        def search(question: str) -> list[str]:
            # The question's embedding is made first, outside the transaction, as SHVYA does.
            embedding = (
                retrieval.embed_query(with_backend, question) if with_backend is not None else None
            )
            with db.session_factory() as session:
                hits = retrieval.search(
                    session, company_id=db.company_id, query=question, k=K, embedding=embedding
                )
            return [labels[hit.passage_id] for hit in hits]

        return search

    def dense(question: str) -> list[str]:
        embedding = retrieval.embed_query(backend, question)
        with db.session_factory() as session:
            ids = retrieval.dense(session, company_id=db.company_id, embedding=embedding, limit=K)
        return [labels[i] for i in ids]

    with db.session_factory() as session:
        described_text = retrieval.describe(session, None)
        described_hybrid = retrieval.describe(session, backend)
    dense_path = "pgvector hnsw" if "pgvector" in described_hybrid else "numpy exact"
    return [
        Method("SHVYA full text", searcher(None), described_text),
        Method("SHVYA hybrid (RRF)", searcher(backend), described_hybrid),
        Method("SHVYA dense alone", dense, f"retrieval.dense ({dense_path}, {backend.name})"),
    ]


@dataclass
class SearchFigures:
    store: str
    methods: list[Method]
    questions: list[retrieval_corpus.Query]
    busy_percent: float
    load_start: float
    load_end: float
    seconds: float


def recall(
    method: Method,
    questions: Sequence[retrieval_corpus.Query],
    *,
    kind: str | None = None,
    k: int = K,
) -> float:
    scores = [
        len(q.relevant & set(found[:k])) / len(q.relevant)
        for q, found in zip(questions, method.results, strict=True)
        if kind is None or q.kind == kind
    ]
    return sum(scores) / len(scores) if scores else float("nan")


def search_pass(
    store: str,
    methods: list[Method],
    questions: list[retrieval_corpus.Query],
    *,
    warmup: int,
) -> SearchFigures:
    hybrid = next(m for m in methods if m.name.startswith("SHVYA hybrid"))
    if questions:  # the first hybrid search loads the company's vectors (numpy path)
        start = time.perf_counter()
        hybrid.search(questions[0].text)
        hybrid.cold_ms = 1000 * (time.perf_counter() - start)
    for question in questions[:warmup]:
        for method in methods:
            method.search(question.text)
    load_start = wait_for_quiet_machine(max_wait_s=60)
    say(f"  {len(questions)} questions x {len(methods)} methods (load average {load_start:.2f})")
    meter = BusyMeter()
    start = time.perf_counter()
    for number, question in enumerate(questions):
        shift = number % len(methods)
        for method in methods[shift:] + methods[:shift]:
            method.run(question.text)
        if (number + 1) % 100 == 0 and number + 1 < len(questions):
            say(f"    {number + 1} questions, {time.perf_counter() - start:.0f} s")
    seconds = time.perf_counter() - start
    return SearchFigures(
        store=store,
        methods=methods,
        questions=questions,
        busy_percent=meter.percent(),
        load_start=load_start,
        load_end=os.getloadavg()[0],
        seconds=seconds,
    )


# --- report ------------------------------------------------------------------------------------


def ms(values: Sequence[float], fraction: float) -> float:
    return 1000 * percentile(values, fraction)


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def search_rows(figures: SearchFigures) -> list[list[str]]:
    anchor = figures.methods[0]
    anchor_recall = recall(anchor, figures.questions)
    anchor_p99 = ms(anchor.latencies, 0.99)
    rows = []
    for method in figures.methods:
        r5 = recall(method, figures.questions)
        p99 = ms(method.latencies, 0.99)
        is_anchor = method is anchor
        rows.append(
            [
                STORE_LABELS[figures.store],
                method.name,
                fmt(r5, 3),
                *(
                    fmt(recall(method, figures.questions, kind=kind), 3)
                    for kind in retrieval_corpus.KINDS
                ),
                fmt(recall(method, figures.questions, k=1), 3),
                fmt(ms(method.latencies, 0.50), 2),
                fmt(p99, 2),
                "1.00x" if is_anchor else fmt_ratio(r5 / anchor_recall),
                "1.0x" if is_anchor else f"{p99 / anchor_p99:.1f}x",
            ]
        )
    return rows


SEARCH_HEADERS = (
    "store", "method", "recall@5", "keyword", "paraphrase", "typo", "recall@1", "p50 ms",
    "p99 ms", "recall@5 / bm25s", "p99 / bm25s",
)  # fmt: skip


def report(
    args: argparse.Namespace,
    corpus: retrieval_corpus.Corpus,
    anchor_index_s: float,
    ingests: list[IngestFigures],
    searches: list[SearchFigures],
    notes: list[str],
) -> None:
    say()
    say("=" * 100)
    say("Retrieval: knowledge-base search (bench/retrieval.py, issue 6)")
    say("=" * 100)
    kinds = {kind: sum(q.kind == kind for q in corpus.queries) for kind in retrieval_corpus.KINDS}
    say(
        f"corpus: {len(corpus.documents):,} documents, {corpus.passage_count:,} passages; "
        f"{len(corpus.queries)} questions ("
        + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        + f"), one relevant passage each; seed {args.seed}"
    )
    say(f"bm25s index of {corpus.passage_count:,} passages built in {anchor_index_s:.2f} s")
    load = os.getloadavg()
    say(
        f"machine: {machine_description()}; load average now {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (1, 5, 15 min)"
    )
    say()
    say("Search (one question at a time; recall@5 by question kind; latency per question):")
    say()
    rows = [row for figures in searches for row in search_rows(figures)]
    say(markdown_table(SEARCH_HEADERS, rows))
    say()
    for figures in searches:
        label = STORE_LABELS[figures.store]
        for method in figures.methods[1:]:
            say(f"- {label}, {method.name}: {method.describe}")
        hybrid = figures.methods[2]
        say(
            f"- {label}: first hybrid search (loads the vectors) {fmt(hybrid.cold_ms or 0)} ms; "
            f"pass of {figures.seconds:.0f} s, machine {figures.busy_percent:.0f}% busy, load "
            f"average {figures.load_start:.2f} -> {figures.load_end:.2f}"
        )
    say()
    say("Ingest (add_document, inline, its phases committed as POST /kb/documents commits them):")
    say()
    say(
        markdown_table(
            (
                "store",
                "embeddings",
                "documents",
                "passages",
                "seconds",
                "passages/s",
                "embedding s",
                "machine busy",
                "load",
            ),
            [
                [
                    STORE_LABELS[f.store],
                    f.embeddings,
                    f"{f.documents:,}",
                    f"{f.passages:,}",
                    f"{f.seconds:.1f}",
                    f"{f.rate:,.0f}",
                    f"{f.embed_seconds:.1f}",
                    f"{f.busy_percent:.0f}%",
                    f"{f.load:.2f}",
                ]
                for f in ingests
            ],
        )
    )
    say()
    say("Targets:")
    for figures in searches:
        label = STORE_LABELS[figures.store]
        anchor, text_only, hybrid = figures.methods[:3]
        a5, h5 = recall(anchor, figures.questions), recall(hybrid, figures.questions)
        say(
            f"- {label}: hybrid recall@5 {h5:.3f} vs bm25s {a5:.3f} = {fmt_ratio(h5 / a5)} "
            f"(above the anchor: "
            f"{'met' if h5 > a5 else 'NOT met'}); p99 hybrid {ms(hybrid.latencies, 0.99):.1f} ms, "
            f"full text {ms(text_only.latencies, 0.99):.1f} ms (under {TARGET_P99_MS:.0f} ms: "
            + ", ".join(
                f"{name} {'met' if ms(m.latencies, 0.99) < TARGET_P99_MS else 'NOT met'}"
                for name, m in (("hybrid", hybrid), ("full text", text_only))
            )
            + ")"
        )
    for note in notes:
        say(f"- {note}")
    say()
    say(f"reproduce: {reproduce_command(args)}")


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=20, help="questions not counted")
    parser.add_argument(
        "--only",
        default=",".join(STORES),
        help=f"comma-separated stores among {', '.join(STORES)} (default: all; pgvector is "
        "skipped when the pgserver package cannot start a server)",
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG_URL)
    )
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.stores) - set(STORES)
    if unknown:
        parser.error(f"--only: unknown store(s) {', '.join(sorted(unknown))}")
    return args


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line of this run, every option written out (the PostgreSQL URL only when
    it is not the default; its password hidden)."""
    parts = [
        os.path.relpath(sys.executable, REPO_DIR),
        "bench/retrieval.py",
        f"--passages={args.passages}",
        f"--queries={args.queries}",
        f"--seed={args.seed}",
        f"--warmup={args.warmup}",
        f"--only={args.only}",
    ]
    if args.postgres_url != DEFAULT_PG_URL:
        parts.append("--postgres-url=" + make_url(args.postgres_url).render_as_string())
    return f"cd {REPO_DIR} && {shlex.join(parts)}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    install_signal_handlers()
    say(f"reproduce: {reproduce_command(args)}")
    load = os.getloadavg()
    say(
        f"machine: {machine_description()}; load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (1, 5, 15 min)"
    )
    say(
        f"code: {git_commit()}; bm25s {package_version('bm25s')}, wordllama "
        f"{package_version('wordllama')}, numpy {np.__version__}, SQLAlchemy "
        f"{package_version('sqlalchemy')}, psycopg {package_version('psycopg')}"
    )
    start = time.perf_counter()
    corpus = retrieval_corpus.generate(args.passages, args.queries, seed=args.seed)
    expected: dict[str, str] = {}
    for document in corpus.documents:
        for passage in split_passages(blocks_of(document.markdown)):
            expected[passage.heading] = passage.content
    if len(expected) != corpus.passage_count:
        raise RuntimeError("the corpus does not map one section to one passage")
    say(
        f"corpus: {len(corpus.documents):,} documents, {corpus.passage_count:,} passages, "
        f"{len(corpus.queries)} questions ({time.perf_counter() - start:.1f} s)"
    )
    labels = list(expected)
    anchor = Bm25sAnchor(labels, [f"{heading}\n{expected[heading]}" for heading in labels])
    say(f"bm25s: indexed in {anchor.index_seconds:.2f} s")
    backend = embedding_backend(Settings(_env_file=None, embeddings="wordllama"))  # type: ignore[call-arg]
    if backend is None:
        raise SystemExit("the WordLlama embedding backend did not load (is wordllama installed?)")

    ingests: list[IngestFigures] = []
    searches: list[SearchFigures] = []
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        pgvector_admin = None
        if "pgvector" in args.stores:
            try:
                pgvector_admin = stack.enter_context(pgvector_server())
            except Exception as exc:  # optional: say so and go on without it
                notes.append(f"pgvector skipped: pgserver could not start a server ({exc!r})")
                say(notes[-1])
                args.stores.remove("pgvector")
        for store in args.stores:
            say()
            say(f"== {STORE_LABELS[store]} ==")
            opener = {"pg_url": args.postgres_url, "pgvector_admin": pgvector_admin}
            with fresh_store(store, "plain", **opener) as db:
                say(f"  {server_version(db)}")
                ingests.append(ingest(db, corpus.documents, store=store, backend=None))
            with fresh_store(store, "dense", **opener) as db:
                ingests.append(ingest(db, corpus.documents, store=store, backend=backend))
                ids = passage_ids(db, expected)
                methods = [Method("bm25s (anchor)", anchor.search, "bm25s BM25 (lucene)")]
                methods += shvya_methods(db, ids, backend)
                for method in methods[1:]:
                    say(f"  {method.name}: {method.describe}")
                figures = search_pass(store, methods, corpus.queries, warmup=args.warmup)
                searches.append(figures)
                for row in search_rows(figures):
                    say("    " + " | ".join(row[1:]))
    report(args, corpus, anchor.index_seconds, ingests, searches, notes)
    say(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: benchmark schemas, databases and files removed", file=sys.stderr)
        sys.exit(130)
