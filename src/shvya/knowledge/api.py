"""The knowledge base over HTTP: documents in, passages out."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from shvya.db.phases import commit_between_phases, run_phases
from shvya.db.session import DbSession
from shvya.deps import ClockDep, Paging, SettingsDep
from shvya.errors import Forbidden, InvalidInput
from shvya.knowledge import retrieval, service
from shvya.knowledge.embeddings import EmbeddingBackend
from shvya.knowledge.schemas import (
    KBAddOut,
    KBDocumentIn,
    KBDocumentOut,
    KBDocumentPage,
    KBPassageOut,
    KBSearchOut,
)
from shvya.schemas import (
    AUTH_ERRORS,
    SafeStr,
    error_responses,
    inline_json_schema,
)
from shvya.tenancy.auth import CurrentKey
from shvya.tenancy.models import Role
from shvya.tenancy.service import AuthenticatedKey

router = APIRouter(tags=["knowledge base and AI"], responses=error_responses(*AUTH_ERRORS))


def get_embeddings(request: Request) -> EmbeddingBackend | None:
    backend: EmbeddingBackend | None = request.app.state.embeddings
    return backend


Embeddings = Annotated[EmbeddingBackend | None, Depends(get_embeddings)]


def require_editor(key: CurrentKey) -> AuthenticatedKey:
    if key.role not in (Role.admin, Role.supervisor):
        raise Forbidden(
            "changing the knowledge base needs an admin or supervisor key; "
            f"yours is {key.role.value}"
        )
    return key


EditorKey = Annotated[AuthenticatedKey, Depends(require_editor)]


async def read_upload(request: Request) -> service.DocumentFile:
    """The JSON body `{"title", "content"}`, or a multipart form with `file` (and `title`)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=5)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput(
                "file: send the document as the multipart field `file`", extra={"field": "file"}
            )
        data = await file.read()
        title = form.get("title")
        name = file.filename or "upload.txt"
        if title is not None and not isinstance(title, str):
            raise InvalidInput("title: must be text", extra={"field": "title"})
        return service.DocumentFile(
            (title or name.rsplit(".", 1)[0]).strip(), data, name, file.content_type
        )
    try:
        body = KBDocumentIn.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(f"{field}: {first.get('msg')}", extra={"field": field}) from None
    return service.DocumentFile(
        body.title, body.content.encode(), f"{body.title}.md", "text/markdown"
    )


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_json_schema(KBDocumentIn)},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string", "maxLength": 500},
                    },
                }
            },
        },
    }
}


@router.post(
    "/kb/documents",
    status_code=201,
    summary="Add a knowledge-base document: JSON text, or a .md/.txt/.html/.pdf upload",
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": KBAddOut, "description": "Unchanged: the same content was there"},
        202: {"model": KBAddOut, "description": "Large: a kb.ingest job will read it"},
        **error_responses(403),
    },
)
def add_document(
    upload: Annotated[service.DocumentFile, Depends(read_upload)],
    response: Response,
    session: DbSession,
    key: EditorKey,
    settings: SettingsDep,
    clock: ClockDep,
    embeddings: Embeddings,
) -> KBAddOut:
    # The passages' embeddings are a call (a network one for OpenAI): the request's reads end
    # before it, and what it writes comes after (db/phases.py).
    adding = service.add_document(
        session,
        company_id=key.company.id,
        file=upload,
        settings=settings,
        backend=embeddings,
        actor=key.actor,
        now=clock.now(),
    )
    result = run_phases(adding, session=session, end_prepare=commit_between_phases(session))
    response.status_code = {"unchanged": 200, "pending": 202}.get(result.outcome, 201)
    return KBAddOut(
        document=KBDocumentOut.model_validate(result.document),
        outcome=result.outcome,
        job_id=result.job_id,
    )


@router.get("/kb/documents", summary="The company's knowledge-base documents")
def list_documents(session: DbSession, key: CurrentKey, page: Paging) -> KBDocumentPage:
    rows, total = service.list_documents(session, company_id=key.company.id, page=page)
    return KBDocumentPage.of(rows, total, page)


@router.get("/kb/documents/{document_id}", summary="One document", responses=error_responses(404))
def get_document(document_id: uuid.UUID, session: DbSession, key: CurrentKey) -> KBDocumentOut:
    return KBDocumentOut.model_validate(
        service.get_document(session, company_id=key.company.id, document_id=document_id)
    )


@router.delete(
    "/kb/documents/{document_id}",
    summary="Delete a document and its passages",
    responses=error_responses(403, 404),
)
def delete_document(
    document_id: uuid.UUID, session: DbSession, key: EditorKey, clock: ClockDep
) -> KBDocumentOut:
    document = service.delete_document(
        session,
        company_id=key.company.id,
        document_id=document_id,
        actor=key.actor,
        now=clock.now(),
    )
    return KBDocumentOut.model_validate(document)


@router.get(
    "/kb/search",
    summary="The passages that best match a question (hybrid retrieval)",
    description=(
        "Full text and dense vectors, fused. The question is also read through the sales "
        "lexicon (price, plan, trial, refund, hours, ... in English, Spanish, Hindi and "
        "Hinglish), so a question in another language than the knowledge base's finds its "
        'passages; a comparison ("Basic vs Premium") has each item\'s best passage among '
        "those returned. `matched_by` names each ranking that found a passage."
    ),
)
def search(
    session: DbSession,
    key: CurrentKey,
    embeddings: Embeddings,
    q: Annotated[SafeStr, Query(min_length=1, max_length=1000)],
    clock: ClockDep,
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> KBSearchOut:
    # The question's embedding is a call: no transaction stays open across it.
    hits = run_phases(
        service.search_knowledge(
            session, company_id=key.company.id, query=q, k=k, backend=embeddings, now=clock.now()
        ),
        session=session,
        end_prepare=commit_between_phases(session),
    )
    return KBSearchOut(
        query=q,
        retrieval=retrieval.describe(session, embeddings),
        passages=[
            KBPassageOut(
                passage_id=h.passage_id,
                document_id=h.doc_id,
                title=h.title,
                heading=h.heading,
                position=h.position,
                content=h.content,
                score=h.score,
                matched_by=h.ranks,
            )
            for h in hits
        ],
    )
