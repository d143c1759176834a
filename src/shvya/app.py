"""The FastAPI application: settings, database and clock in, each domain's router mounted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shvya import __version__
from shvya.ai.api import leads_router as ai_leads_router
from shvya.ai.api import router as ai_router
from shvya.channels.api import router as channels_router
from shvya.channels.email_domains_api import router as email_domains_router
from shvya.channels.email_inbound_api import router as email_inbound_router
from shvya.channels.feedback_api import router as email_feedback_router
from shvya.channels.feedback_api import webhooks_router as email_webhooks_router
from shvya.channels.twilio_webhooks import router as twilio_webhooks_router
from shvya.channels.unsubscribe import router as unsubscribe_router
from shvya.channels.webhooks import router as webhooks_router
from shvya.clock import Clock, SystemClock
from shvya.config import Environment, JobEngineName, Settings, load_settings
from shvya.conversations.api import router as conversations_router
from shvya.crm.api import router as crm_router
from shvya.db.engine import make_pooled_engine, make_session_factory
from shvya.deps import declared_query_params, unknown_query_params
from shvya.errors import ShvyaError
from shvya.jobs.api import router as jobs_router
from shvya.jobs.engines import JobEngine
from shvya.knowledge import retrieval
from shvya.knowledge.api import router as knowledge_router
from shvya.knowledge.embeddings import embedding_backend
from shvya.ratelimit import SlidingWindowLimiter
from shvya.sequences.api import router as sequences_router
from shvya.sequences.scheduler import DueSource, Scheduler
from shvya.templates.api import router as templates_router
from shvya.templates.email_api import router as email_templates_router
from shvya.tenancy.api import router as tenancy_router
from shvya.tenancy.auth import get_caller
from shvya.web.sandbox import router as sandbox_router
from shvya.webhooks.api import router as outbound_webhooks_router

logger = logging.getLogger(__name__)

DESCRIPTION = """
SHVYA records every lead that writes in, answers with an AI grounded in your knowledge base,
and keeps an audit trail of everything that happens.

Every route except `/health` needs `Authorization: Bearer <API key>`
(create one with `shvya apikey create --company COMPANY --role admin`, COMPANY being the
company's id or slug from `shvya company list`).
A key sees only its own company's data; another company's ids answer 404.
The installation's operator key (`shvya apikey create --operator`) reads only `GET /queue/stats`,
every company's together.
Errors are JSON: `{"error": "<code>", "detail": "<what to fix>"}`.
"""


class BodySizeLimit:
    """Answers 413 for bodies over the limit before anything parses them (OWASP API4).

    Reads the body up front, so a chunked upload without Content-Length is cut off too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        upload_paths: dict[str, int] | None = None,
        upload_prefixes: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        # Routes that take files (knowledge-base uploads) get their own, larger limit.
        self.upload_paths = upload_paths or {}
        # Routes under a prefix with their own limit (inbound email: /webhooks/email/inbound/).
        self.upload_prefixes = upload_prefixes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        max_bytes = self.upload_paths.get(path, self.default_max_bytes)
        for prefix, prefix_max in self.upload_prefixes.items():
            if path.startswith(prefix):
                max_bytes = prefix_max
        await self._limited(scope, receive, send, max_bytes)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if declared > max_bytes:
                    await self._reject_too_large(send, max_bytes)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                await self._reject_too_large(send, max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject_too_large(self, send: Send, max_bytes: int) -> None:
        await self._reject(
            send, 413, "body_too_large", f"the request body is over {max_bytes} bytes"
        )

    @staticmethod
    async def _reject(send: Send, status: int, code: str, detail: str) -> None:
        response = JSONResponse({"error": code, "detail": detail}, status_code=status)
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _field_name(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(location[0] if location else "body")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    # Only the place and the message: echoing `input` back could put NUL characters, lone
    # surrogates or a megabyte of someone's text into our response.
    return [
        {"field": _field_name(tuple(error.get("loc", ()))), "message": str(error.get("msg", ""))}
        for error in exc.errors()
    ]


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path, found by asking the app's routes (an
    included router answers for all of its own) whether they fully match the request under
    each method. Starlette's 405 names only the methods of the first route whose path matched,
    though GET /leads and POST /leads are two routes (RFC 9110 section 15.5.6: Allow lists the
    methods the resource supports)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShvyaError)
    async def _shvya_error(_request: Request, exc: ShvyaError) -> JSONResponse:
        headers: dict[str, str] = {}
        if "retry_after_seconds" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after_seconds"])
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse(
            {"error": "invalid_input", "detail": detail, "errors": errors}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return JSONResponse(
            {"error": codes.get(exc.status_code, "http_error"), "detail": detail},
            status_code=exc.status_code,
            headers=headers,
        )

    async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        logger.warning("db.unavailable", extra={"error": type(exc).__name__})
        return JSONResponse(
            {"error": "database_unavailable", "detail": "the database is unreachable; retry"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _database_unavailable(request, exc)
        logger.exception("db.error")
        return JSONResponse(
            {"error": "internal_error", "detail": "the request failed; nothing was saved"},
            status_code=500,
        )


# Read only when a request has a parameter its route does not take (not a route dependency,
# so the OpenAPI document is what the routes declare).
_bearer = HTTPBearer(auto_error=False)


def _authenticate_alone(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    with request.app.state.session_factory() as session:
        get_caller(request, session, credentials)


async def reject_unknown_query_params(request: Request) -> None:
    """A query parameter the route does not take is a 422 naming it (`GET /leads?ai_pasued=
    true` must not list every lead). The caller's key is checked first, so a caller without
    one gets the 401 the route would give and learns nothing about its parameters. Async, and
    the key read only on that path: the API's routes pay no thread-pool hop for it."""
    unknown = unknown_query_params(request)
    if not unknown:
        return
    await run_in_threadpool(_authenticate_alone, request, await _bearer(request))
    route = request.scope["route"]
    takes = ", ".join(sorted(declared_query_params(route))) or "no query parameter"
    raise RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ("query", name),
                "msg": f"not a parameter of {route.path}; it takes {takes}",
            }
            for name in unknown
        ]
    )


KNOWN_QUERY_PARAMS = Depends(reject_unknown_query_params)

DOCS_ASSETS = "/static/docs"


def _mount_api_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc) with their scripts and styles served by SHVYA
    (src/shvya/web/static/docs/README.md: versions and licences), not fetched from a CDN, so
    the pages work without internet access."""
    openapi_url = app.openapi_url or "/openapi.json"

    def spec_url(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + openapi_url

    def asset(request: Request, path: str) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + f"{DOCS_ASSETS}/{path}"

    # Images only from here: ReDoc's footer asks cdn.redoc.ly for its logo (and shows none
    # when that fails), which would tell a third party who reads our docs, and when.
    own_images = {"Content-Security-Policy": "img-src 'self' data:"}

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=spec_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui/swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui/swagger-ui.css"),
            swagger_favicon_url=asset(request, "swagger-ui/favicon-32x32.png"),
            # No badge from validator.swagger.io: it would send the spec's address there.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(own_images)
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=spec_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc/redoc.standalone.js"),
            redoc_favicon_url=asset(request, "swagger-ui/favicon-32x32.png"),
            with_google_fonts=False,
        )
        page.headers.update(own_images)
        return page


class HealthOut(BaseModel):
    status: str
    database: str
    retrieval: str | None = None


def build_job_engine(settings: Settings, engine: Engine, clock: Clock) -> JobEngine | None:
    """What `shvya serve` does with the jobs its requests enqueue: run them in worker threads
    of this process (embedded), publish them to Celery, or leave them to `shvya worker`."""
    if settings.job_engine is JobEngineName.celery:
        from shvya.jobs.engines.celery_engine import CeleryPublisher

        return CeleryPublisher(settings, engine)
    if not settings.serve_worker:
        return None
    from shvya.jobs.engines.embedded import EmbeddedWorker
    from shvya.jobs.runner import load_handlers

    return EmbeddedWorker(
        engine, handlers=load_handlers(settings.job_handlers), clock=clock, settings=settings
    )


def serve_due_sources(settings: Settings) -> list[DueSource] | None:
    """What the scheduler inside `shvya serve` asks each tick: with the embedded engine (the
    default), every due source; with Celery, none (run `shvya scheduler`; docs/scheduler.md)."""
    if settings.job_engine is not JobEngineName.embedded:
        return None
    from shvya.handlers import default_due_sources

    return default_due_sources()


def app_from_environment() -> FastAPI:
    """The factory uvicorn calls in each worker process (`shvya serve --workers N`)."""
    settings = load_settings()
    engine = make_pooled_engine(settings.database_url, settings.db_pool_size)
    clock = SystemClock()
    return create_app(
        settings,
        engine=engine,
        clock=clock,
        job_engine=build_job_engine(settings, engine, clock),
        due_sources=serve_due_sources(settings),
    )


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    job_engine: JobEngine | None = None,
    due_sources: Sequence[DueSource] | None = None,
) -> FastAPI:
    """The app. `job_engine` hears about jobs after each commit and is started and stopped
    with the app; without one, jobs wait in the table for `shvya worker`. With `due_sources`,
    a scheduler ticks inside the app every SHVYA_SCHEDULER_INTERVAL_S (docs/scheduler.md)."""
    engine = engine or make_pooled_engine(settings.database_url, settings.db_pool_size)
    docs = settings.docs_enabled

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if job_engine is not None:
            job_engine.start()
        scheduler: Scheduler | None = None
        if due_sources is not None:
            scheduler = Scheduler(
                app.state.session_factory,
                sources=due_sources,
                clock=app.state.clock,
                interval_s=settings.scheduler_interval_s,
            )
            app.state.scheduler = scheduler
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop)
            if job_engine is not None:
                await run_in_threadpool(job_engine.stop)

    app = FastAPI(
        title="SHVYA",
        version=__version__,
        description=DESCRIPTION,
        # /docs and /redoc are SHVYA's own (_mount_api_docs): FastAPI's load from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.job_engine = job_engine
    app.state.scheduler = None
    app.state.session_factory = make_session_factory(engine, notifier=job_engine)
    app.state.clock = clock or SystemClock()
    app.state.auth_limiter = SlidingWindowLimiter(settings.auth_failures_per_minute)
    app.state.sandbox_limiter = SlidingWindowLimiter(settings.sandbox_messages_per_minute)
    app.state.embeddings = embedding_backend(settings)
    _install_error_handlers(app)

    @app.get(
        "/health",
        tags=["health"],
        summary="Liveness and database reachability (no key needed)",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "The database is unreachable"}},
    )
    def health() -> JSONResponse:
        try:
            with app.state.session_factory() as session:
                session.execute(text("SELECT 1"))
                mode = retrieval.describe(session, app.state.embeddings)
        except Exception as exc:  # any failure to reach the database is the answer
            logger.warning("health.db_unreachable", extra={"error": type(exc).__name__})
            database = "unreachable"
            if settings.env is not Environment.production:
                # Helps on a development machine; in production it would tell anyone, with no
                # key, the database's host, port, name and user.
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                database = f"unreachable: {type(exc).__name__}: {reason}"
            return JSONResponse({"status": "error", "database": database}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "retrieval": mode})

    app.include_router(sandbox_router)
    app.mount("/static", StaticFiles(packages=[("shvya.web", "static")]), name="static")
    if docs:
        _mount_api_docs(app)
    # The API refuses query parameters its routes do not take; the providers' webhooks and the
    # sandbox page, whose callers we do not write, do not.
    api = [KNOWN_QUERY_PARAMS]
    app.include_router(conversations_router, dependencies=api)
    app.include_router(channels_router, dependencies=api)
    app.include_router(webhooks_router)
    app.include_router(unsubscribe_router)  # no login: the token is the credential
    app.include_router(twilio_webhooks_router)
    app.include_router(email_inbound_router)
    app.include_router(templates_router, dependencies=api)
    app.include_router(sequences_router, dependencies=api)
    app.include_router(crm_router, dependencies=api)
    app.include_router(ai_leads_router, dependencies=api)
    app.include_router(jobs_router, dependencies=api)
    app.include_router(knowledge_router, dependencies=api)
    app.include_router(ai_router, dependencies=api)
    app.include_router(tenancy_router, dependencies=api)
    # Issue 15 part F: DKIM keys per sending domain.
    app.include_router(email_domains_router, dependencies=api)
    app.include_router(email_templates_router, dependencies=api)
    app.include_router(email_feedback_router, dependencies=api)
    app.include_router(email_webhooks_router)
    # Issue 16: signed outbound webhooks (docs/webhooks.md).
    app.include_router(outbound_webhooks_router, dependencies=api)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        upload_paths={"/kb/documents": settings.max_upload_bytes},
        upload_prefixes={"/webhooks/email/inbound": settings.max_inbound_email_bytes},
    )
    return app
