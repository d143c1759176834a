"""The `shvya` command. Every command honours DATABASE_URL like the server does."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar, get_args

import typer
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from shvya import __version__, onboarding, redact
from shvya.clock import SystemClock
from shvya.config import JobEngineName, Settings, load_settings
from shvya.crm.models import Channel
from shvya.crm.schemas import AssigneeRef, ContactOut, LeadFilter, LeadOut
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import current_revision, head_revision, upgrade_database
from shvya.db.phases import commit_between_phases, run_phases
from shvya.errors import ShvyaError
from shvya.jobs import service as jobs
from shvya.schemas import PageRequest
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Role
from shvya.tenancy.schemas import UserCreateIn

app = typer.Typer(
    help="SHVYA: AI sales engagement over WhatsApp, answered from your knowledge base.",
    no_args_is_help=True,
    add_completion=False,
)
company_app = typer.Typer(help="Manage companies (tenants).", no_args_is_help=True)
apikey_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
user_app = typer.Typer(
    help="The people of a company: agents, supervisors, admins.", no_args_is_help=True
)
queue_app = typer.Typer(help="Look at the job queue.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered jobs: list and replay.", no_args_is_help=True)
templates_app = typer.Typer(help="WhatsApp message templates.", no_args_is_help=True)
kb_app = typer.Typer(help="The knowledge base the AI answers from.", no_args_is_help=True)
leads_app = typer.Typer(help="The company's leads and their conversations.", no_args_is_help=True)
app.add_typer(company_app, name="company")
app.add_typer(apikey_app, name="apikey")
app.add_typer(user_app, name="user")
app.add_typer(queue_app, name="queue")
app.add_typer(dlq_app, name="dlq")
app.add_typer(templates_app, name="templates")
app.add_typer(kb_app, name="kb")
app.add_typer(leads_app, name="leads")
sequences_app = typer.Typer(help="Follow-up sequences.", no_args_is_help=True)
app.add_typer(sequences_app, name="sequences")

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"configuration: {problems}")
    logging.getLogger().setLevel(settings.log_level)
    return settings


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


@contextmanager
def _database(settings: Settings, *, pool_size: int = 2) -> Iterator[Engine]:
    engine = make_engine(settings.database_url, pool_size=pool_size)
    try:
        yield engine
    except OperationalError as exc:
        first_line = str(exc.orig or exc).strip().splitlines()[0]
        if exc.connection_invalidated or "connect" in first_line or "unable to open" in first_line:
            fail(f"cannot reach the database at {_safe_url(settings)}: {first_line}")
        fail(f"database error at {_safe_url(settings)}: {first_line}")
    finally:
        engine.dispose()


def _require_migrated(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "has no SHVYA schema" if current is None else f"is at revision {current}"
        fail(f"the database {state}, the code needs {head}: run `shvya migrate` first")


def _in_transaction(engine: Engine, work: Callable[[Session], T]) -> T:
    """One unit of work: commit once, roll back on any error, turn ours into messages."""
    _require_migrated(engine)
    session = make_session_factory(engine)()
    try:
        result = work(session)
        session.commit()
        return result
    except ShvyaError as exc:
        session.rollback()
        fail(exc.message)
    except ProgrammingError as exc:
        session.rollback()
        fail(f"database error: {str(exc.orig or exc).strip().splitlines()[0]}")
    finally:
        session.close()


def _run(settings: Settings, work: Callable[[Session], T]) -> T:
    """`work` as the command's one unit of work on the configured database."""
    with _database(settings) as engine:
        return _in_transaction(engine, work)


def _echo_lines(settings: Settings, work: Callable[[Session], list[str]]) -> None:
    """Run `work` (_run) and print the lines it returns."""
    for line in _run(settings, work):
        typer.echo(line)


COMPANY_REF = "its id, its slug (`shvya company list`) or a name no other company has"
CompanyName = Annotated[str, typer.Option(metavar="COMPANY", help=f"The company: {COMPANY_REF}.")]
OneCompany = Annotated[
    str | None,
    typer.Option(
        metavar="COMPANY",
        help=f"The company: {COMPANY_REF} (default: the installation's default company, the "
        "first one created, whatever its name now).",
        show_default=False,
    ),
]
AnyCompany = Annotated[
    str | None,
    typer.Option(metavar="COMPANY", help=f"One company ({COMPANY_REF}); default: every company."),
]
JobTypeName = Annotated[str | None, typer.Option("--type", help="One job type.")]


@app.command()
def version() -> None:
    """Print SHVYA's version."""
    typer.echo(__version__)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to this version of SHVYA."""
    settings = _settings()
    with _database(settings) as engine:
        before = current_revision(engine)
        upgrade_database(settings.database_url)
        after = current_revision(engine)
    if before == after:
        typer.echo(f"database {_safe_url(settings)} is up to date (revision {after})")
    else:
        typer.echo(f"database {_safe_url(settings)} migrated: {before or 'empty'} -> {after}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (env: SHVYA_HOST; 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on (env: SHVYA_PORT; 8000)"),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (PostgreSQL only).")
    ] = 1,
) -> None:
    """Start the HTTP server (API and /docs); on first start, print the admin key once."""
    import uvicorn

    settings = _settings()
    if workers > 1 and settings.is_sqlite:
        fail(
            "several server processes on SQLite fight over its write lock; "
            "use --workers 1, or PostgreSQL (DATABASE_URL=postgresql://...)"
        )
    with _database(settings) as engine:
        first = _in_transaction(
            engine,
            lambda session: onboarding.bootstrap_default_company(session, now=SystemClock().now()),
        )
        connected = _in_transaction(engine, lambda session: _connect_meta_number(session, settings))
        mailbox = _in_transaction(engine, lambda session: _connect_smtp_mailbox(session, settings))
    if first is not None:
        company, raw_key = first
        typer.echo(
            "\n".join(
                [
                    "",
                    f"First start: created company {company.name!r} (slug {company.slug}) "
                    "with the pipeline "
                    "New > Qualified > Nurture > Converted > Lost.",
                    "Its admin API key, shown only this once (SHVYA keeps only a hash):",
                    "",
                    f"    {raw_key}",
                    "",
                    "Lost it? `shvya apikey create --company default --role admin` makes another.",
                    "",
                ]
            )
        )
    if connected:
        typer.echo(
            f"WhatsApp Cloud number {connected} (META_PHONE_NUMBER_ID) is connected to the "
            "default company"
        )
    if mailbox:
        typer.echo(f"Email from {mailbox} (SMTP_*) is connected to the default company")
    bind_host = host or settings.host
    bind_port = port or settings.port
    docs = f"http://{bind_host}:{bind_port}/docs" if settings.docs_enabled else "(docs off)"
    typer.echo(f"SHVYA {__version__} on http://{bind_host}:{bind_port}  API docs: {docs}")
    uvicorn.run(
        "shvya.app:app_from_environment",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # uvicorn's logging with a filter that keeps secrets (the WhatsApp verify token in the
        # handshake's query string, keys) out of every line (src/shvya/redact.py).
        log_config=redact.uvicorn_log_config(settings.log_level),
        # Client addresses behind a proxy are read by SHVYA itself, only from the proxies
        # SHVYA_TRUSTED_PROXIES names (shvya.deps.client_address).
        proxy_headers=False,
    )


def _connect_smtp_mailbox(session: Session, settings: Settings) -> str | None:
    """SMTP_* connect the default company's mailbox, checked with the server (docs/email.md 5)."""
    if not settings.smtp_host or not settings.smtp_from_email:
        return None
    from shvya.channels import service as channels

    company = tenancy.get_default_company(session)
    run_phases(
        channels.connect_email_from_environment(
            session, company_id=company.id, settings=settings, now=SystemClock().now()
        ),
        session=session,
        end_prepare=commit_between_phases(session),
    )
    return settings.smtp_from_email


def _connect_meta_number(session: Session, settings: Settings) -> str | None:
    if not settings.meta_phone_number_id or settings.meta_whatsapp_token is None:
        return None
    from shvya.channels import service as channels

    company = tenancy.get_default_company(session)
    # Checked with Meta like a number connected through the API (docs/whatsapp.md 1.14).
    run_phases(
        channels.connect_whatsapp_from_environment(
            session, company_id=company.id, settings=settings, now=SystemClock().now()
        ),
        session=session,
        end_prepare=commit_between_phases(session),
    )
    return settings.meta_phone_number_id


@company_app.command("create")
def company_create(
    name: Annotated[
        str, typer.Argument(help="The company's name (several companies may share one).")
    ],
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. Asia/Kolkata.")] = "UTC",
    phone_region: Annotated[
        str | None,
        typer.Option(help="Region for phone numbers without a country code, e.g. IN."),
    ] = None,
) -> None:
    """Create a company with its default pipeline; prints its id and its slug, the unique
    names other commands take in --company."""
    company = _run(
        _settings(),
        lambda session: onboarding.create_company(
            session,
            name=name,
            timezone=timezone,
            phone_region=phone_region,
            now=SystemClock().now(),
        ),
    )
    typer.echo(
        f"created company {company.name!r}: slug {company.slug}, id {company.id}, "
        f"time zone {company.timezone}"
    )


@company_app.command("list")
def company_list() -> None:
    """List the companies: id, slug (both unique), name and time zone."""
    for company in _run(_settings(), tenancy.list_companies):
        default = "  default" if company.is_default else ""
        typer.echo(
            f"{company.id}  {company.slug:<24} {company.name}  ({company.timezone}){default}"
        )


OperatorFlag = Annotated[
    bool,
    typer.Option(
        "--operator",
        help="The installation's operator key: install-wide queue figures "
        "(GET /queue/stats?all_companies=true), no company's data. Only this command makes one.",
    ),
]


@apikey_app.command("create")
def apikey_create(
    company: Annotated[
        str | None, typer.Option(help=f"The company whose key it is: {COMPANY_REF}.")
    ] = None,
    role: Annotated[Role | None, typer.Option(help="What the company's key may do.")] = None,
    operator: OperatorFlag = False,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    user: Annotated[
        str | None,
        typer.Option(
            help="The e-mail of the person the key belongs to (`shvya user add`): it has their "
            "role and acts as user:<id>."
        ),
    ] = None,
) -> None:
    """Create an API key: a company's (--company and --role, or --user) or the installation's
    operator key (--operator). The key is printed alone on the last line, and only this
    once."""
    settings = _settings()
    if operator:
        if company is not None or role is not None or user is not None:
            fail(
                "an operator key belongs to no company, user or role: drop --company/--role/--user"
            )

        def make_operator_key(session: Session) -> tuple[str, str]:
            key, raw_key = tenancy.create_operator_key(session, name=name, now=SystemClock().now())
            return key.prefix, raw_key

        prefix, raw_key = _run(settings, make_operator_key)
        typer.echo(f"created operator key {prefix}; store it now:", err=True)
        typer.echo(raw_key)
        return
    if company is None or (role is None and user is None):
        fail(
            "a company's key needs --company and --role or --user "
            "(or --operator for the operator's key)"
        )
    company_ref: str = company

    def work(session: Session) -> tuple[str, str, str]:
        owner = tenancy.get_company_by_ref(session, ref=company_ref)
        person = (
            None if user is None else tenancy.get_user(session, company_id=owner.id, email=user)
        )
        key, raw_key = tenancy.create_api_key(
            session,
            company_id=owner.id,
            role=role,
            name=name,
            actor="cli",
            now=SystemClock().now(),
            user=person,
        )
        return key.prefix, raw_key, key.role

    prefix, raw_key, key_role = _run(settings, work)
    whose = f" of {user}" if user is not None else ""
    typer.echo(
        f"created {key_role} key {prefix}{whose} for {company_ref!r}; store it now:", err=True
    )
    typer.echo(raw_key)


@user_app.command("add")
def user_add(
    company: Annotated[str, typer.Option(help=f"The company: {COMPANY_REF}.")],
    email: Annotated[str, typer.Option(help="Their e-mail address, unique in the company.")],
    name: Annotated[str, typer.Option(help="Their name, as colleagues know them.")],
    role: Annotated[Role, typer.Option(help="What they may do.")],
) -> None:
    """Add a person to a company; give them a key with `shvya apikey create --user EMAIL`."""
    try:
        data = UserCreateIn(email=email, name=name, role=role)
    except ValidationError as exc:
        fail("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors()))

    def work(session: Session) -> str:
        owner = tenancy.get_company_by_ref(session, ref=company)
        person = tenancy.create_user(
            session,
            company_id=owner.id,
            email=data.email,
            name=data.name,
            role=data.role,
            actor="cli",
            now=SystemClock().now(),
        )
        return f"added {person.role} {person.email} ({person.name}) to {company!r}: id {person.id}"

    typer.echo(_run(_settings(), work))


@user_app.command("list")
def user_list(
    company: Annotated[str, typer.Option(help=f"The company: {COMPANY_REF}.")],
) -> None:
    """List a company's people: id, role, e-mail and name."""

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_by_ref(session, ref=company)
        return [
            f"{u.id}  {u.role:<10}  {u.email}  {u.name}"
            for u in tenancy.list_users(session, company_id=owner.id)
        ]

    _echo_lines(_settings(), work)


def _key_state(revoked_at: datetime | None) -> str:
    return f"revoked {revoked_at.isoformat()}" if revoked_at else "active"


@apikey_app.command("list")
def apikey_list(
    company: Annotated[str | None, typer.Option(help=f"The company: {COMPANY_REF}.")] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="List the operator keys instead.")
    ] = False,
) -> None:
    """List a company's API keys, or the operator keys (never the keys themselves)."""
    settings = _settings()
    if operator == (company is not None):
        fail("give either --company or --operator")

    def work(session: Session) -> list[str]:
        if company is None:
            return [
                f"{k.id}  {k.prefix}  operator    {_key_state(k.revoked_at)}  {k.name}"
                for k in tenancy.list_operator_keys(session)
            ]
        owner = tenancy.get_company_by_ref(session, ref=company)
        return [
            f"{k.id}  {k.prefix}  {k.role:<10}  {_key_state(k.revoked_at)}  {k.name}"
            for k in tenancy.list_api_keys(session, company_id=owner.id)
        ]

    _echo_lines(settings, work)


@apikey_app.command("revoke")
def apikey_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or prefix (see `apikey list`).")],
) -> None:
    """Revoke an API key or an operator key; it stops working at once. A company's last
    active admin key is refused: create another admin key first."""
    settings = _settings()

    def work(session: Session) -> str:
        operator_key = tenancy.find_operator_key(session, ref=key)
        if operator_key is not None:
            if operator_key.revoked_at is not None:
                fail(
                    f"key {operator_key.prefix} was already revoked at "
                    f"{operator_key.revoked_at.isoformat()}"
                )
            tenancy.revoke_operator_key(session, key=operator_key, now=SystemClock().now())
            return operator_key.prefix
        row = tenancy.find_api_key(session, company_id=None, ref=key)
        if row.revoked_at is not None:
            fail(f"key {row.prefix} was already revoked at {row.revoked_at.isoformat()}")
        tenancy.revoke_api_key(session, key=row, actor="cli", now=SystemClock().now())
        return row.prefix

    typer.echo(f"revoked key {_run(settings, work)}")


@app.command()
def worker(
    engine_name: Annotated[
        JobEngineName | None,
        typer.Option("--engine", help="embedded threads or Celery (env: SHVYA_JOB_ENGINE)"),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=0, max=64, help="Threads for any job (env: SHVYA_WORKER_THREADS)"),
    ] = None,
    p1_threads: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Threads only for P1 jobs (env: SHVYA_WORKER_P1_THREADS)"),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run the due jobs, then exit (embedded only).")
    ] = False,
) -> None:
    """Run queued jobs until SIGTERM (`shvya serve` already runs embedded workers)."""
    import signal
    import threading

    settings = _settings()
    chosen = engine_name or settings.job_engine
    general = settings.worker_threads if threads is None else threads
    p1_only = settings.worker_p1_threads if p1_threads is None else p1_threads
    if chosen is JobEngineName.celery:
        if once:
            fail("--once works with the embedded engine only")
        from shvya.jobs.engines.celery_engine import run_celery_workers

        with _database(settings) as engine:
            _require_migrated(engine)
        try:
            code = run_celery_workers(settings, threads=general, p1_threads=p1_only)
        except RuntimeError as exc:
            fail(str(exc))
        raise typer.Exit(code)

    from shvya.jobs.engines.embedded import EmbeddedWorker
    from shvya.jobs.runner import load_handlers

    # Each lane holds its claim connection and opens one session per job; the lease keeper
    # and the reaper need one each.
    with _database(settings, pool_size=2 * (general + p1_only) + 2) as engine:
        _require_migrated(engine)
        runner = EmbeddedWorker(
            engine,
            handlers=load_handlers(settings.job_handlers),
            clock=SystemClock(),
            settings=settings,
            threads=general,
            p1_threads=p1_only,
        )
        if once:
            typer.echo(f"ran {runner.run_until_idle()} jobs")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        runner.start()
        typer.echo(
            f"worker {runner.name}: {p1_only} P1 thread(s), {general} thread(s) for any job; "
            "SIGTERM or Ctrl-C stops it",
            err=True,
        )
        stop.wait()
        typer.echo(
            f"stopping: finishing running jobs (up to {settings.shutdown_grace_seconds:g} s)",
            err=True,
        )
        runner.stop()


@app.command(
    help="Turn due work into jobs until SIGTERM or Ctrl-C: bump-ups to leads gone quiet.\n\n"
    "`shvya serve` already runs one with the embedded job engine; run this with Celery, or "
    "for more schedulers on PostgreSQL (any number may run at once: none doubles a job). "
    "Each tick that enqueued something logs a line with what each source enqueued "
    "(docs/scheduler.md)."
)
def scheduler(
    interval: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            max=3600,
            help="Seconds between ticks (env: SHVYA_SCHEDULER_INTERVAL_S; 5)",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one tick, print what it enqueued, and exit.")
    ] = False,
) -> None:
    import signal
    import threading

    from shvya.handlers import default_due_sources
    from shvya.sequences.scheduler import Scheduler

    settings = _settings()
    every = settings.scheduler_interval_s if interval is None else interval
    with _database(settings) as engine:
        _require_migrated(engine)
        ticker = Scheduler(
            make_session_factory(engine),
            sources=default_due_sources(),
            clock=SystemClock(),
            interval_s=every,
        )
        if once:
            report = ticker.tick()
            typer.echo(f"enqueued {report.enqueued}: {report.summary()}")
            if report.failed:
                raise typer.Exit(1)
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        ticker.start()
        names = ", ".join(source.name for source in ticker.sources)
        typer.echo(
            f"scheduler: a tick every {every:g} s ({names}); SIGTERM or Ctrl-C stops it",
            err=True,
        )
        stop.wait()
        ticker.stop()
        typer.echo(f"scheduler stopped after {ticker.ticks} tick(s)", err=True)


def _company_id(session: Session, company: str | None) -> uuid.UUID | None:
    return None if company is None else tenancy.get_company_by_ref(session, ref=company).id


@queue_app.command("stats")
def queue_stats_command(
    company: AnyCompany = None,
) -> None:
    """Jobs by status and type, and each lane's oldest due job and wait times: one company's,
    or every company's together (the installation's view; over HTTP it needs an operator key)."""
    settings = _settings()

    def work(session: Session) -> list[str]:
        owner = None if company is None else tenancy.get_company_by_ref(session, ref=company)
        stats = jobs.queue_stats(
            session, company_id=None if owner is None else owner.id, now=SystemClock().now()
        )
        scope = "every company" if owner is None else f"company {owner.slug} ({owner.name})"
        lines = [
            f"scope: {scope}",
            "status: " + ", ".join(f"{k} {v}" for k, v in stats.by_status.items()),
        ]
        for job_type, counts in sorted(stats.by_type.items()):
            lines.append(f"  {job_type:<18} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        for lane, lane_stats in stats.lanes.items():
            oldest = lane_stats.oldest_due_age_seconds
            lines.append(
                f"{lane}: {lane_stats.queued_due} due"
                + (f", oldest {oldest:.1f} s" if oldest is not None else "")
                + (
                    f", wait p50 {lane_stats.wait_p50_ms:.0f} ms"
                    f" p99 {lane_stats.wait_p99_ms:.0f} ms"
                    f" over {lane_stats.started_last_hour} starts in the last hour"
                    if lane_stats.wait_p50_ms is not None and lane_stats.wait_p99_ms is not None
                    else ""
                )
            )
        return lines

    _echo_lines(settings, work)


@dlq_app.command("list")
def dlq_list(
    company: AnyCompany = None,
    job_type: JobTypeName = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Dead-lettered jobs with their last error."""
    settings = _settings()

    def work(session: Session) -> list[str]:
        rows, total = jobs.list_dead_jobs(
            session,
            company_id=_company_id(session, company),
            job_type=job_type,
            page=PageRequest(limit=limit, offset=0),
        )
        lines = [
            f"{job.id}  {job.type:<18} attempts {job.attempts}  {job.last_error or ''}"
            for job in rows
        ]
        return [*lines, f"{total} dead-lettered job(s)"]

    _echo_lines(settings, work)


@dlq_app.command("replay")
def dlq_replay(
    company: AnyCompany = None,
    job_type: JobTypeName = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
) -> None:
    """Put dead-lettered jobs back in the queue, due now, with their attempts reset."""
    settings = _settings()

    def work(session: Session) -> int:
        return jobs.replay_dead_jobs(
            session,
            company_id=_company_id(session, company),
            job_type=job_type,
            limit=limit,
            now=SystemClock().now(),
        )

    typer.echo(f"replayed {_run(settings, work)} job(s)")


@templates_app.command("sync")
def templates_sync(
    company: OneCompany = None,
) -> None:
    """Pull the WhatsApp account's templates and their statuses from Meta."""
    from shvya.channels import service as channels
    from shvya.channels.adapters import ChannelSendError

    settings = _settings()

    def work(session: Session) -> tuple[int, int]:
        owner = tenancy.get_company_or_default(session, ref=company)
        typer.echo(f"asking Meta for the templates of {owner.name!r}...", err=True)
        try:
            return run_phases(
                channels.sync_whatsapp_templates(
                    session, company_id=owner.id, settings=settings, now=SystemClock().now()
                ),
                session=session,
                end_prepare=commit_between_phases(session),
            )
        except ChannelSendError as exc:
            fail(f"Meta refused: {exc.code}: {exc.message}")

    seen, approved = _run(settings, work)
    typer.echo(f"{seen} template(s), {approved} approved")


def _kb_files(paths: list[Path]) -> list[Path]:
    from shvya.knowledge.documents import SUPPORTED

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED)
            )
        elif path.is_file():
            found.append(path)
        else:
            fail(f"{path}: no such file or folder")
    return found


@kb_app.command("add")
def kb_add(
    paths: Annotated[list[Path], typer.Argument(help="Files (.md .txt .html .pdf) or folders.")],
    company: OneCompany = None,
) -> None:
    """Add or update knowledge-base documents (the title is the file name)."""
    from shvya.errors import ShvyaError as Refused
    from shvya.knowledge import service as knowledge
    from shvya.knowledge.embeddings import embedding_backend

    settings = _settings()
    files = _kb_files(paths)
    if not files:
        fail("no .md, .txt, .html or .pdf files found")
    # Not a request: ingest everything here, however large, rather than queueing jobs.
    inline = settings.model_copy(update={"kb_inline_ingest_bytes": 1 << 62})
    backend = embedding_backend(settings)
    outcomes: dict[str, int] = {}
    problems: list[str] = []
    with _database(settings) as engine:
        _require_migrated(engine)
        factory = make_session_factory(engine)
        with factory() as session:
            try:
                owner = tenancy.get_company_or_default(session, ref=company)
            except ShvyaError as exc:
                fail(exc.message)
        with typer.progressbar(files, label="adding", show_pos=True) as progress:
            for path in progress:
                with factory() as session:
                    try:
                        file = knowledge.DocumentFile(
                            title=path.stem,
                            data=path.read_bytes(),
                            filename=path.name,
                            content_type=None,
                        )
                        adding = knowledge.add_document(
                            session,
                            company_id=owner.id,
                            file=file,
                            settings=inline,
                            backend=backend,
                            actor="cli",
                            now=SystemClock().now(),
                        )
                        result = run_phases(
                            adding, session=session, end_prepare=commit_between_phases(session)
                        )
                        session.commit()
                        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                    except Refused as exc:
                        session.rollback()
                        problems.append(f"{path}: {exc.message}")
    for problem in problems:
        typer.echo(f"skipped {problem}", err=True)
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
    typer.echo(f"{len(files)} file(s): {summary or 'none added'}")
    if problems:
        raise typer.Exit(1)


@kb_app.command("list")
def kb_list(
    company: OneCompany = None,
) -> None:
    """The knowledge-base documents and their passages."""
    from shvya.knowledge import service as knowledge

    settings = _settings()

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_or_default(session, ref=company)
        rows, total = knowledge.list_documents(
            session, company_id=owner.id, page=PageRequest(limit=10_000, offset=0)
        )
        return [f"{d.id}  {d.status:<7} {d.passage_count:>4} passages  {d.title}" for d in rows] + [
            f"{total} document(s)"
        ]

    _echo_lines(settings, work)


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument(help="A question, as a lead would ask it.")],
    company: OneCompany = None,
    k: Annotated[int, typer.Option(min=1, max=50, help="How many passages.")] = 5,
) -> None:
    """The passages the AI would answer this question from."""
    from shvya.knowledge import retrieval
    from shvya.knowledge import service as knowledge
    from shvya.knowledge.embeddings import embedding_backend

    settings = _settings()
    backend = embedding_backend(settings)

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_or_default(session, ref=company)
        hits = run_phases(
            knowledge.search_knowledge(
                session,
                company_id=owner.id,
                query=query,
                k=k,
                backend=backend,
                now=SystemClock().now(),
            ),
            session=session,
            end_prepare=commit_between_phases(session),
        )
        lines = [f"retrieval: {retrieval.describe(session, backend)}"]
        for rank, hit in enumerate(hits, start=1):
            where = f"{hit.title}" + (f" > {hit.heading}" if hit.heading else "")
            lines.append(f"{rank}. [{hit.score:.4f}] {where} (passage {hit.position})")
            lines.append(f"   {hit.content[:300]}")
        if not hits:
            lines.append("no passage matches")
        return lines

    _echo_lines(settings, work)


@kb_app.command("delete")
def kb_delete(
    document_id: Annotated[
        uuid.UUID, typer.Argument(metavar="DOC_ID", help="The document's id (see `kb list`).")
    ],
    company: OneCompany = None,
) -> None:
    """Delete a knowledge-base document and its passages; the AI stops answering from it."""
    from shvya.knowledge import service as knowledge

    settings = _settings()

    def work(session: Session) -> str:
        owner = tenancy.get_company_or_default(session, ref=company)
        document = knowledge.delete_document(
            session,
            company_id=owner.id,
            document_id=document_id,
            actor="cli",
            now=SystemClock().now(),
        )
        return document.title

    typer.echo(f"deleted document {document_id} ({_run(settings, work)})")


def _contacts(contacts: list[ContactOut]) -> str:
    return ", ".join(f"{c.channel}:{c.value}" for c in contacts) or "no contact"


def _pause(lead: LeadOut) -> str:
    if not lead.ai_paused:
        return ""
    since = f" since {lead.ai_paused_since:%Y-%m-%d %H:%M}" if lead.ai_paused_since else ""
    label = "needs a person" if lead.needs_person else "AI paused"
    return f"  [{label}: {lead.ai_paused_reason or 'no reason'}{since}]"


@leads_app.command("list")
def leads_list(
    company: OneCompany = None,
    stage: Annotated[
        str | None, typer.Option(metavar="STAGE", help="Only leads in this stage (name or id).")
    ] = None,
    needs_person: Annotated[
        bool,
        typer.Option(
            "--needs-person",
            help="Only leads the AI handed to a person who has not answered yet, "
            "the longest-waiting first, with the reason and since when.",
        ),
    ] = False,
    ai_paused: Annotated[
        bool | None,
        typer.Option(
            "--ai-paused/--ai-on", help="Only leads whose AI is paused (for any reason), or on."
        ),
    ] = None,
    channel: Annotated[
        Channel | None, typer.Option(help="Only leads with a contact on this channel.")
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            "--search", "-q", metavar="TEXT", help="Search names, phone numbers and emails."
        ),
    ] = None,
    assigned_to: Annotated[
        str | None,
        typer.Option(
            metavar="USER_ID", help="Only leads assigned to this user, or `none`: to no one."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Leads per page.")] = 20,
    page: Annotated[int, typer.Option(min=1, help="Which page, from 1.")] = 1,
) -> None:
    """The company's leads, newest first (--needs-person: oldest first), a page at a time."""
    from shvya.crm import service as crm

    settings = _settings()
    assignee: uuid.UUID | Literal["none"] | None = None
    if assigned_to is not None:
        try:
            parsed = TypeAdapter(AssigneeRef).validate_python(assigned_to)
        except ValidationError as exc:
            fail(f"--assigned-to: {exc.errors()[0]['msg']}", code=2)
        if parsed == "me":
            fail("--assigned-to: the terminal is no one's key; give a user id or none", code=2)
        assignee = parsed
    filters = LeadFilter(
        stage=stage,
        needs_person=True if needs_person else None,
        ai_paused=ai_paused,
        channel=channel,
        search=search or None,
        assigned_to=assignee,
    )

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_or_default(session, ref=company)
        request = PageRequest(limit=limit, offset=(page - 1) * limit)
        rows, total = crm.list_leads(session, company_id=owner.id, filters=filters, page=request)
        lines = [
            f"{lead.id}  {lead.stage.name:<10} {lead.created_at:%Y-%m-%d %H:%M}  "
            f"{lead.name or '(no name)'}  {_contacts(lead.contacts)}" + _pause(lead)
            for lead in crm.present_leads(session, rows)
        ]
        if not rows:
            return [*lines, f"no lead on page {page}; {total} lead(s) in all"]
        first = request.offset + 1
        shown = f"leads {first}-{first + len(rows) - 1} of {total}"
        more = f"; next: --page {page + 1}" if first + len(rows) - 1 < total else ""
        return [*lines, shown + more]

    _echo_lines(settings, work)


@leads_app.command("show")
def leads_show(
    lead_id: Annotated[
        uuid.UUID, typer.Argument(metavar="LEAD_ID", help="The lead's id (see `leads list`).")
    ],
    company: OneCompany = None,
    messages: Annotated[int, typer.Option(min=0, max=500, help="How many last messages.")] = 10,
) -> None:
    """One lead: its stage, contacts and last messages."""
    from shvya.conversations import service as conversations
    from shvya.crm import service as crm

    settings = _settings()

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_or_default(session, ref=company)
        lead = crm.present_lead(
            session, crm.get_lead(session, company_id=owner.id, lead_id=lead_id)
        )
        lines = [
            f"lead      {lead.id}",
            f"name      {lead.name or '(no name)'}",
            f"stage     {lead.stage.name}",
            f"AI        {'paused' if lead.ai_paused else 'on'}{_pause(lead)}",
            f"created   {lead.created_at.isoformat()}",
            f"last in   {lead.last_inbound_at.isoformat() if lead.last_inbound_at else '-'}",
        ]
        if lead.attributes:
            lines.append(
                "attributes " + ", ".join(f"{k}={v}" for k, v in sorted(lead.attributes.items()))
            )
        lines.append("contacts")
        lines.extend(f"  {c.channel:<9} {c.value}" for c in lead.contacts)
        _, total = conversations.list_lead_messages(
            session, company_id=owner.id, lead_id=lead.id, page=PageRequest(limit=1, offset=0)
        )
        last = PageRequest(limit=max(messages, 1), offset=max(total - messages, 0))
        rows, _ = conversations.list_lead_messages(
            session, company_id=owner.id, lead_id=lead.id, page=last
        )
        lines.append(f"messages (last {min(messages, total)} of {total})")
        for message in rows if messages else []:
            arrow = "<-" if message.direction == "in" else "->"
            text = " ".join(message.text.split())
            lines.append(
                f"  {message.created_at:%Y-%m-%d %H:%M:%S} {arrow} {message.status:<9} {text[:200]}"
            )
        return lines

    _echo_lines(settings, work)


@sequences_app.command("simulate")
def sequences_simulate(
    sequence_id: Annotated[
        uuid.UUID, typer.Argument(metavar="SEQ", help="The sequence's id (GET /sequences).")
    ],
    company: OneCompany = None,
    stage: Annotated[
        str | None, typer.Option(metavar="STAGE", help="Every lead in this stage (name or id).")
    ] = None,
    leads: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="A file of lead ids, one a line.", exists=True),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=90, help="Days to simulate.")] = 14,
    reply_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The chance a lead replies before each step.")
    ] = 0.0,
) -> None:
    """Dry run: the sequence over the leads on a simulated clock, sending and writing nothing;
    per day and per step: sends, deferrals, refusals, stops, earliest and latest local send."""
    from shvya.sequences.schemas import SimulationRow
    from shvya.sequences.simulate import simulate

    if (stage is None) == (leads is None):
        fail("give --stage or --leads, one of the two")
    lead_ids: list[uuid.UUID] | None = None
    if leads is not None:
        try:
            lead_ids = [
                uuid.UUID(line.strip()) for line in leads.read_text().splitlines() if line.strip()
            ]
        except ValueError as exc:
            fail(f"{leads}: every line must be a lead id ({exc})")
        if not lead_ids:
            fail(f"{leads}: no lead ids in it")
    settings = _settings()

    def line(row: SimulationRow) -> str:
        def counts(values: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "-"

        span = f"{row.earliest_local_send or '-'}-{row.latest_local_send or '-'}"
        return (
            f"{row.key:<12} {row.sends:>6} {span:<12} {counts(row.deferrals):<30} "
            f"{counts(row.refusals):<24} {counts(row.stops)}"
        )

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_or_default(session, ref=company)
        report = simulate(
            session,
            company_id=owner.id,
            sequence_id=sequence_id,
            lead_ids=lead_ids,
            stage=stage,
            days=days,
            reply_rate=reply_rate,
            settings=settings,
            now=SystemClock().now(),
        )
        session.rollback()  # a dry run writes nothing
        header = (
            f"{'':<12} {'sends':>6} {'local time':<12} {'deferrals':<30} {'refusals':<24} stops"
        )
        return [
            f"sequence {report.sequence_id}: {report.leads} leads, {report.days} days, "
            f"reply rate {report.reply_rate:g}",
            f"{'day':<12}" + header[12:],
            *(line(row) for row in report.per_day),
            f"{'step':<12}" + header[12:],
            *(line(row) for row in report.per_step),
            line(report.total),
        ]

    _echo_lines(settings, work)


# --- help -----------------------------------------------------------------------------------
# Typer labels every option and argument in --help with its Python type (`--company <str>`,
# `--help <bool>`). Help shows what to type instead: nothing after a flag, the option's
# metavar, or an upper-case kind of value like click's own help (TEXT, INTEGER, PATH, the
# choices).

_VALUE_NAMES: dict[object, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH"}


def _value_name(param: TyperOption) -> str:
    if param.metavar is not None:
        return param.metavar
    described = param.type_descriptor
    if described.choices is not None:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in described.choices) + "]"
    annotation = get_args(described.annotation)[0] if described.is_list else described.annotation
    return _VALUE_NAMES.get(annotation, str(getattr(annotation, "__name__", "VALUE")).upper())


class _HelpOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return "" if self.is_flag or self.count else _value_name(self)


class _HelpArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # its name (or metavar) and help say what it is


def _plain_help(params: list[Any]) -> list[Any]:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _HelpOption
        elif type(param) is TyperArgument:
            param.__class__ = _HelpArgument
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_help(super().get_params(ctx))


# Issue 15 part F: sending domains (docs/email-domains.md).
email_app = typer.Typer(
    help="Sending domains: DKIM keys and the SPF, DKIM and DMARC records.", no_args_is_help=True
)
dkim_app = typer.Typer(help="DKIM keys per sending domain.", no_args_is_help=True)
app.add_typer(email_app, name="email")
email_app.add_typer(dkim_app, name="dkim")


def _stored_dkim_keys(
    settings: Settings, domain: str, company: str | None
) -> dict[str, list[str]] | None:
    """The selectors and public keys SHVYA holds for `domain` (one company's with --company),
    or None when the database cannot be read: the check then uses --selector alone."""
    from shvya.channels import email_domains

    if settings.is_sqlite:
        path = settings.database_url.split("///", 1)[-1]
        if path not in {"", ":memory:"} and not Path(path).exists():
            return None
    try:
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            if current_revision(engine) != head_revision():
                return None
            with make_session_factory(engine)() as session:
                rows = email_domains.domains_named(session, domain=domain)
                if company is not None:
                    owner = tenancy.get_company_by_ref(session, ref=company)
                    rows = [row for row in rows if row.company_id == owner.id]
                keys: dict[str, list[str]] = {}
                for row in rows:
                    keys.setdefault(row.selector, []).append(row.public_key)
                return keys
        finally:
            engine.dispose()
    except ShvyaError as exc:
        fail(exc.message)
    except Exception:
        return None


@email_app.command("check-domain")
def email_check_domain(
    domain: Annotated[str, typer.Argument(help="The domain of the From address.")],
    selector: Annotated[
        list[str] | None,
        typer.Option(
            help="A DKIM selector to look up (repeatable); SHVYA's stored selectors for the "
            "domain are looked up too when the database is reachable."
        ),
    ] = None,
    company: AnyCompany = None,
) -> None:
    """Look up SPF, DKIM and DMARC for a sending domain and say what is missing. Gmail and
    Yahoo require all three of bulk senders since February 2024. Exit 0 when all are
    published, 1 when one is missing or wrong, 2 when DNS itself fails (timeout, SERVFAIL).
    SHVYA_DNS_NAMESERVER (host:port) chooses the DNS server."""
    from shvya.channels import dns_check, email_domains

    settings = _settings()
    try:
        name = email_domains.normalise_domain(domain)
    except ShvyaError as exc:
        fail(exc.message)
    stored = _stored_dkim_keys(settings, name, company)
    selectors: dict[str, list[str]] = dict(stored or {})
    for given in selector or []:
        selectors.setdefault(given.strip().lower(), [])
    if stored is None:
        typer.echo("(SHVYA's database not reachable: checking the --selector values only)")
    try:
        findings = dns_check.check_domain(settings, name, selectors)
    except dns_check.DnsFailure as exc:
        fail(f"DNS failed: {exc}", code=2)
    for finding in findings:
        typer.echo(f"{finding.check:<6} {finding.state.value:<8} {finding.name}: {finding.detail}")
        if finding.publish is not None:
            typer.echo(f"       publish TXT {finding.name}: {finding.publish}")
    if any(f.state is not dns_check.State.ok for f in findings):
        typer.echo(
            "Gmail and Yahoo require SPF, DKIM and DMARC of bulk senders since February 2024: "
            "publish what is missing before sending sequences from this domain."
        )
        raise typer.Exit(1)
    typer.echo(f"{name}: SPF, DKIM and DMARC are published")


@dkim_app.command("add")
def email_dkim_add(
    domain: Annotated[str, typer.Argument(help="The domain of the From address.")],
    selector: Annotated[str, typer.Option(help="The DKIM selector.")] = "shvya",
    private_key: Annotated[
        Path | None,
        typer.Option(
            help="A PEM file holding the RSA private key to use (default: SHVYA makes a "
            "2048-bit key)."
        ),
    ] = None,
    company: OneCompany = None,
) -> None:
    """Add a sending domain's DKIM key (stored encrypted) and print the TXT record to publish."""
    from shvya.channels import email_domains

    settings = _settings()
    pem = private_key.read_text() if private_key is not None else None

    def work(session: Session) -> email_domains.EmailDomain:
        owner = tenancy.get_company_or_default(session, ref=company)
        return email_domains.add_domain(
            session,
            company_id=owner.id,
            domain=domain,
            selector=selector,
            private_key_pem=pem,
            settings=settings,
            now=SystemClock().now(),
        )

    row = _run(settings, work)
    typer.echo(f"DKIM key added for {row.domain}; publish this TXT record:")
    typer.echo(f"{email_domains.record_name(row.selector, row.domain)}")
    typer.echo(email_domains.record_value(row.public_key))


@dkim_app.command("list")
def email_dkim_list(company: OneCompany = None) -> None:
    """The company's sending domains and the DKIM record each must publish."""
    from shvya.channels import email_domains

    def work(session: Session) -> list[str]:
        owner = tenancy.get_company_or_default(session, ref=company)
        return [
            f"{row.domain} {email_domains.record_name(row.selector, row.domain)} "
            f"{email_domains.record_value(row.public_key)}"
            for row in email_domains.list_domains(session, company_id=owner.id)
        ]

    _echo_lines(_settings(), work)


# The loop below reaches the top-level groups only: `email dkim` gets the plain help here.
dkim_app.info.cls = _Group
for _dkim_command in dkim_app.registered_commands:
    _dkim_command.cls = _Command


# After the last command: every command and group so far gets the plain help.
for _typer_app in (app, *(group.typer_instance for group in app.registered_groups)):
    if _typer_app is not None:
        _typer_app.info.cls = _Group
        for _command in _typer_app.registered_commands:
            _command.cls = _Command


class LogFormatter(logging.Formatter):
    """`LEVEL logger message`, and on a line logged while a job runs, the job's id and type
    (stamped on the record by the job runner, jobs.runner.stamp_job_log_records)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            return line
        return f"{line} job_id={job_id} job_type={getattr(record, 'job_type', '')}"


def main() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
