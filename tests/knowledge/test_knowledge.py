"""The knowledge base through the API: every format, hash no-ops, replacement, large uploads
by a job, hybrid search, and one company's passages never found by another."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from shvya.app import create_app
from shvya.config import Settings
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.phases import run_phases
from shvya.handlers import default_handlers
from shvya.jobs.engines.embedded import EmbeddedWorker
from shvya.knowledge import retrieval
from shvya.knowledge.embeddings import embedding_backend
from shvya.knowledge.models import AIKBPassage
from shvya.knowledge.service import DocumentFile, add_document, delete_document
from tests.ai.support import PRICING_MD, tiny_pdf
from tests.support import FakeClock, Tenant


def add_json(client: TestClient, tenant: Tenant, title: str, content: str) -> Any:
    return client.post(
        "/kb/documents", json={"title": title, "content": content}, headers=tenant.admin
    )


def upload(client: TestClient, tenant: Tenant, name: str, data: bytes, **form: str) -> Any:
    return client.post(
        "/kb/documents", files={"file": (name, data)}, data=form, headers=tenant.admin
    )


def search(client: TestClient, tenant: Tenant, q: str, k: int = 5) -> dict[str, Any]:
    response = client.get("/kb/search", params={"q": q, "k": k}, headers=tenant.agent)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def passages(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(AIKBPassage)) or 0


def test_a_document_is_split_found_and_its_price_quoted_verbatim(
    client: TestClient, acme: Tenant
) -> None:
    created = add_json(client, acme, "Pricing", PRICING_MD)
    assert created.status_code == 201, created.text
    document = created.json()["document"]
    assert created.json()["outcome"] == "created"
    assert (document["status"], document["passage_count"]) == ("ready", 3)

    found = search(client, acme, "How much does the premium plan cost?")
    assert found["retrieval"].startswith("hybrid (")
    top = found["passages"][0]
    assert top["content"].startswith("The premium plan costs 4,999 INR per month")
    assert top["heading"] == "Acme Motors > Premium plan"
    assert top["title"] == "Pricing"
    assert set(top["matched_by"]) == {"full_text", "full_text:lexicon", "dense"}
    assert search(client, acme, "when is the showroom open")["passages"][0]["heading"].endswith(
        "Showroom"
    )


def test_the_same_content_again_changes_nothing_and_new_content_replaces_it(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    first = add_json(client, acme, "Pricing", PRICING_MD).json()
    again = add_json(client, acme, "Pricing", PRICING_MD)
    assert again.status_code == 200
    assert again.json()["outcome"] == "unchanged"
    assert again.json()["document"]["updated_at"] == first["document"]["updated_at"]
    assert passages(session_factory) == 3

    replaced = add_json(client, acme, "Pricing", "# Prices\nThe premium plan now costs 5,499 INR.")
    assert replaced.status_code == 201
    assert replaced.json()["outcome"] == "replaced"
    assert replaced.json()["document"]["id"] == first["document"]["id"]
    assert passages(session_factory) == 1
    contents = [p["content"] for p in search(client, acme, "premium plan price")["passages"]]
    assert contents == ["The premium plan now costs 5,499 INR."]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "faq.md",
            b"# FAQ\n\n## Delivery\nWe deliver across Maharashtra in 5 days.\n",
            "Maharashtra",
        ),
        (
            "notes.txt",
            b"Warranty: every car has a 3 year warranty.\n\nTest drives on weekends.",
            "warranty",
        ),
        (
            "page.html",
            b"<html><head><script>alert(1)</script></head><body><h2>Finance</h2>"
            b"<p>EMI starts at 8,999 INR.</p></body></html>",
            "EMI",
        ),
        ("brochure.pdf", tiny_pdf("Service centre in Nashik.", "Open all week."), "Nashik"),
    ],
)
def test_every_supported_format_is_read(
    client: TestClient, acme: Tenant, name: str, data: bytes, expected: str
) -> None:
    response = upload(client, acme, name, data)
    assert response.status_code == 201, response.text
    assert response.json()["document"]["title"] == name.rsplit(".", 1)[0]
    hits = search(client, acme, expected)["passages"]
    assert hits, f"nothing found for {expected!r} in {name}"
    assert expected.lower() in hits[0]["content"].lower()
    assert "alert(1)" not in " ".join(h["content"] for h in hits)


def test_bad_uploads_are_clear_422s_and_store_nothing(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    cases = [
        upload(client, acme, "contract.docx", b"PK\x03\x04 not supported"),
        upload(client, acme, "empty.md", b"   \n"),
        upload(client, acme, "broken.pdf", b"%PDF-1.4 this is not a pdf"),
        upload(client, acme, "latin1.txt", "Preis: 5 Mäuse für das Café".encode("latin-1")),
        client.post("/kb/documents", data={"title": "x"}, headers=acme.admin),
        add_json(client, acme, "", "content"),
        client.post("/kb/documents", json={"title": "x"}, headers=acme.admin),
        client.post(
            "/kb/documents", json={"title": "x", "content": "y", "extra": 1}, headers=acme.admin
        ),
    ]
    for response in cases:
        assert response.status_code == 422, response.text
        assert response.json()["detail"]
    assert client.get("/kb/documents", headers=acme.agent).json()["total"] == 0
    assert passages(session_factory) == 0


def test_agents_search_but_only_admins_and_supervisors_change_the_knowledge_base(
    client: TestClient, acme: Tenant
) -> None:
    refused = client.post("/kb/documents", json={"title": "t", "content": "c"}, headers=acme.agent)
    assert refused.status_code == 403
    document = add_json(client, acme, "Pricing", PRICING_MD).json()["document"]
    assert client.delete(f"/kb/documents/{document['id']}", headers=acme.agent).status_code == 403
    assert client.get(f"/kb/documents/{document['id']}", headers=acme.agent).status_code == 200


def test_deleting_a_document_removes_its_passages_from_search(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    document = add_json(client, acme, "Pricing", PRICING_MD).json()["document"]
    assert client.delete(f"/kb/documents/{document['id']}", headers=acme.admin).status_code == 200
    assert client.get(f"/kb/documents/{document['id']}", headers=acme.agent).status_code == 404
    assert search(client, acme, "premium plan")["passages"] == []
    assert passages(session_factory) == 0


def test_a_search_never_returns_another_companys_passage(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    add_json(client, acme, "Pricing", PRICING_MD)
    add_json(client, globex, "Globex pricing", "The Globex premium plan costs 12,000 INR a year.")
    for query in ("premium plan", "Globex premium plan 12,000", "4,999"):
        for tenant, other in ((acme, "Globex"), (globex, "Acme Motors")):
            hits = search(client, tenant, query, k=50)["passages"]
            assert all(other not in h["title"] and other not in h["heading"] for h in hits)
    assert [h["title"] for h in search(client, globex, "premium", k=50)["passages"]] == [
        "Globex pricing"
    ]


def test_a_large_upload_is_ingested_by_a_job(
    engine: Engine, database_url: str, acme: Tenant, clock: FakeClock
) -> None:
    settings = Settings(database_url=database_url, kb_inline_ingest_bytes=1024)
    app = create_app(settings, engine=engine, clock=clock)
    body = PRICING_MD + "\n\n## Details\n" + ("Our cars are serviced every 10,000 km. " * 80)
    with TestClient(app) as client:
        response = upload(client, acme, "big.md", body.encode())
        assert response.status_code == 202, response.text
        assert response.json()["outcome"] == "pending"
        job_id = response.json()["job_id"]
        assert response.json()["document"]["status"] == "pending"
        assert search(client, acme, "premium plan")["passages"] == []
        worker = EmbeddedWorker(engine, handlers=default_handlers(), clock=clock, settings=settings)
        assert worker.run_until_idle() == 1
        job = client.get(f"/jobs/{job_id}", headers=acme.agent).json()
        assert job["status"] == "completed", job
        assert job["result"]["passages"] >= 4
        [document] = client.get("/kb/documents", headers=acme.agent).json()["items"]
        assert (document["status"], document["passage_count"]) == (
            "ready",
            job["result"]["passages"],
        )
        assert search(client, acme, "premium plan")["passages"][0]["content"].startswith(
            "The premium plan costs"
        )


def test_without_an_embedding_model_retrieval_is_full_text_and_says_so(
    engine: Engine, database_url: str, acme: Tenant, clock: FakeClock
) -> None:
    settings = Settings(database_url=database_url, embeddings="none")
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        add_json(client, acme, "Pricing", PRICING_MD)
        found = search(client, acme, "premium plan cost")
        assert found["retrieval"].startswith("full-text only")
        assert set(found["passages"][0]["matched_by"]) == {"full_text", "full_text:lexicon"}
        assert client.get("/health").json()["retrieval"].startswith("full-text only")


def test_search_input_is_validated(client: TestClient, acme: Tenant) -> None:
    for params in ({"q": ""}, {"q": "x", "k": 0}, {"q": "x", "k": 51}, {}):
        assert client.get("/kb/search", params=params, headers=acme.agent).status_code == 422
    # FTS syntax in a question is just words
    add_json(client, acme, "Pricing", PRICING_MD)
    for q in ('premium" OR 1=1 --', "NEAR(premium plan)", "*", "premium AND NOT basic", "'"):
        response = client.get("/kb/search", params={"q": q}, headers=acme.agent)
        assert response.status_code == 200, (q, response.text)


FAQ_MD = """# Acme FAQ

## Delivery
We deliver with our own trucks, and we call you with the time when we leave.

## Finance
We work with three banks, and we help you with the paperwork, with no fee from us.

## Service
We service every car with genuine parts; we pick it up and we bring it back with a wash.
"""


def test_common_words_do_not_outweigh_the_words_that_matter(
    engine: Engine, database_url: str, acme: Tenant, clock: FakeClock
) -> None:
    settings = Settings(database_url=database_url, embeddings="none")  # full text alone
    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        add_json(client, acme, "Pricing", PRICING_MD)
        add_json(client, acme, "FAQ", FAQ_MD)
        # "do", "we", "get", "the", "with" are in most passages; the answer has the others
        found = search(client, acme, "Do we get the premium plan with phone support?")
        assert found["passages"][0]["heading"] == "Acme Motors > Premium plan"
        # a question of stop words alone is searched for with them, not for nothing
        hits = search(client, acme, "when to?")["passages"]
        assert hits, "nothing found for a question of stop words"
        assert hits[0]["heading"] == "Acme Motors > Showroom"  # "... to 6 pm, Monday to ..."


def test_dense_search_sees_what_another_process_adds_replaces_and_deletes(
    client: TestClient,
    acme: Tenant,
    database_url: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    add_json(client, acme, "Pricing", PRICING_MD)
    assert search(client, acme, "premium plan")["passages"]  # this process holds the vectors
    backend = embedding_backend(settings)
    assert backend is not None
    other = make_engine(database_url)  # another process: its own engine and connections
    try:
        other_sessions = make_session_factory(other)

        def add(text: str) -> None:
            with other_sessions() as session:
                adding = add_document(
                    session,
                    company_id=acme.company_id,
                    file=DocumentFile(
                        title="Warranty",
                        data=text.encode(),
                        filename="warranty.md",
                        content_type=None,
                    ),
                    settings=settings,
                    backend=backend,
                    actor="test",
                    now=clock.advance(minutes=1),
                )
                run_phases(adding, session=session, end_prepare=session.commit)
                session.commit()

        add("# Warranty\nEvery car has a 3 year warranty.")
        top = search(client, acme, "warranty")["passages"][0]
        assert top["content"] == "Every car has a 3 year warranty."
        assert set(top["matched_by"]) == {"full_text", "full_text:lexicon", "dense"}
        # replaced: as many passages as before, at a later time
        add("# Warranty\nEvery car has a 5 year warranty.")
        top = search(client, acme, "warranty")["passages"][0]
        assert top["content"] == "Every car has a 5 year warranty."
        assert set(top["matched_by"]) == {"full_text", "full_text:lexicon", "dense"}
        with other_sessions() as session:
            document_id = session.scalars(
                select(AIKBPassage.doc_id).where(AIKBPassage.content.contains("5 year"))
            ).one()
            delete_document(
                session,
                company_id=acme.company_id,
                document_id=document_id,
                actor="test",
                now=clock.advance(minutes=1),
            )
            session.commit()
    finally:
        other.dispose()
    with session_factory() as session:
        found = retrieval.dense(
            session, company_id=acme.company_id, embedding=retrieval.embed_query(backend, "x")
        )
        contents = session.scalars(
            select(AIKBPassage.content).where(AIKBPassage.id.in_(found))
        ).all()
    assert len(found) == len(contents) == 3  # the Pricing passages, no deleted one
