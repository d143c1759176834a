"""Inbound messages per second through the real HTTP server, against an anchor measured alongside.

For each database (SQLite, then PostgreSQL) this starts three uvicorn servers with the same
options (`--factory --workers N --log-level warning --no-access-log`):

- the anchor (bench/anchor_app.py): a minimal FastAPI app that inserts one bare row per
  request (`/one-insert`), and the same app doing one select and three inserts in one
  transaction (`/three-inserts`);
- SHVYA (`shvya.app:app_from_environment`), posting to `/inbound-message` with an API key,
  with its embedded job worker off (SHVYA_SERVE_WORKER=false: the inbound path alone, the
  ai.engage jobs wait in the table as they would for `shvya worker`); this is the row the
  issue's target is about;
- SHVYA as `shvya serve` runs by default, its embedded worker threads running every job the
  requests enqueue, in a store of its own; after each of its turns the benchmark waits until
  the worker has finished them, so the backlog never runs into the next target's turn.

Each target is measured at saturation (a fixed number of keep-alive connections, each sending
its next request as soon as the previous one is answered) and at a fixed offered load below
saturation (open loop: requests leave on a timer whatever the server does, and latency counts
from the scheduled send time, so a slow server cannot hide its queue). The targets take turns
in rounds, so anything else the machine does is spread over all of them. Any answer other
than 201 is an error and is reported. SHVYA's and the anchor's ratio is taken from the same
run; compare ratios between runs, not raw figures.

SQLite runs with one server process: several processes fight over its single write lock
(SHVYA refuses `serve --workers 2` on SQLite for that reason). PostgreSQL runs with
--workers (2 by default), in a fresh schema of the `test` database.

Every run uses a fresh SQLite file in a temporary directory and a fresh PostgreSQL schema,
both removed at the end, also on Ctrl-C.

    make bench                                                     # about 3 minutes
    .venv/bin/python bench/ingest.py --duration 4 --only postgresql    # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import anchor_app
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shvya import onboarding
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import upgrade_database
from shvya.tenancy import service as tenancy
from shvya.tenancy.models import Role

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUEST_TIMEOUT_SECONDS = 30.0
# The target: SHVYA's inbound path at 40% or more of the one-insert anchor's
# throughput on PostgreSQL with 2 uvicorn workers.
TARGET_RATIO = 0.40
TARGET_WORKERS = 2


# --- what is sent ------------------------------------------------------------------------------


class PhoneNumbers:
    """Valid US numbers (+1 415 2XX XXXX onwards), each handed out once per run."""

    def __init__(self) -> None:
        self._next = 0

    def new(self) -> str:
        n = self._next
        self._next += 1
        return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


class InboundBodies:
    """Request bodies with a unique external_id each.

    Three messages in four come from a new number (a new lead); the fourth repeats a recent
    sender, so the path for a known contact is measured too.
    """

    def __init__(self, phones: PhoneNumbers, tag: str) -> None:
        self._phones = phones
        self._tag = tag
        self._count = 0
        self._recent: deque[str] = deque(maxlen=500)

    def next(self) -> bytes:
        n = self._count
        self._count += 1
        if n % 4 == 3 and self._recent:
            phone = self._recent[(n * 7919) % len(self._recent)]
        else:
            phone = self._phones.new()
            self._recent.append(phone)
        return json.dumps(
            {
                "channel": "wa_cloud",
                "from": phone,
                "text": "price?",
                "external_id": f"bench-{self._tag}-{n}",
            },
            separators=(",", ":"),
        ).encode()


# --- load generator ----------------------------------------------------------------------------


class Bodies(Protocol):
    """What a target sends: the next request body, each call a new one."""

    def next(self) -> bytes: ...


# Headers computed from each body (bench/webhooks.py signs every delivery).
Signer = Callable[[bytes], dict[str, str]]


class ProtocolError(Exception):
    pass


class StaleConnection(Exception):
    """The server had closed this idle keep-alive connection before our request reached it."""


class Sender(Protocol):
    resent: int  # requests sent again because the server had closed an idle connection

    async def send(self, path: str, body: bytes) -> int: ...

    async def aclose(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection: a POST, then its status, headers and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.is_reusable = True
        self.requests_sent = 0

    @property
    def is_open(self) -> bool:
        return self.is_reusable and not self.reader.at_eof() and not self.writer.is_closing()

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + body)
        try:
            block = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and self.requests_sent:
                raise StaleConnection from exc
            raise
        self.requests_sent += 1
        lines = block.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.is_reusable = False
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked responses are not expected from these servers")
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.is_reusable = False
        self.writer.close()


class RawSender:
    """A small client on asyncio streams: much less CPU per request than httpx.

    The load generator shares the 2 cores with the servers and the database, so every cycle
    it spends is taken from what is measured; see bench/RESULTS.md for the comparison.
    """

    def __init__(
        self,
        port: int,
        headers: dict[str, str],
        max_connections: int,
        signer: Signer | None = None,
    ) -> None:
        self._port = port
        fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {HOST}:{port}\r\nContent-Type: application/json\r\n{fixed}"
        self._signer = signer
        self._idle: list[RawConnection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self.resent = 0

    async def send(self, path: str, body: bytes) -> int:
        signed = ""
        if self._signer is not None:
            signed = "".join(f"{k}: {v}\r\n" for k, v in self._signer(body).items())
        head = f"POST {path} HTTP/1.1\r\n{self._head}{signed}Content-Length: {len(body)}\r\n\r\n"
        async with self._slots:
            try:
                return await self._send_on(await self._connection(), head.encode(), body)
            except StaleConnection:
                # uvicorn closes keep-alive connections idle for 5 s; like any HTTP client,
                # send again on a new connection (the server never saw the request).
                self.resent += 1
                return await self._send_on(
                    await RawConnection.open(self._port), head.encode(), body
                )

    async def _connection(self) -> RawConnection:
        while self._idle:
            conn = self._idle.pop()
            if conn.is_open:
                return conn
            conn.close()
        return await RawConnection.open(self._port)

    async def _send_on(self, conn: RawConnection, head: bytes, body: bytes) -> int:
        try:
            status = await conn.request(head, body)
        except BaseException:
            conn.close()
            raise
        if conn.is_reusable:
            self._idle.append(conn)
        else:
            conn.close()
        return status

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()


class HttpxSender:
    def __init__(
        self,
        port: int,
        headers: dict[str, str],
        max_connections: int,
        signer: Signer | None = None,
    ) -> None:
        self._signer = signer
        self._client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}",
            headers={"Content-Type": "application/json", **headers},
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        self.resent = 0  # httpx retries a closed keep-alive connection by itself

    async def send(self, path: str, body: bytes) -> int:
        headers = None if self._signer is None else self._signer(body)
        response = await self._client.post(path, content=body, headers=headers)
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


SENDERS: dict[str, Callable[[int, dict[str, str], int, Signer | None], Sender]] = {
    "raw": RawSender,
    "httpx": HttpxSender,
}


class CpuMeter:
    """CPU seconds used by this process, by the server under test and by the whole machine.

    The server's share is what one request costs SHVYA or the anchor in Python; the machine's
    share says whether something else (another test run, say) was competing for the cores.
    Reads /proc, so on a system without it only this process is measured.
    """

    clock_ticks = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_group: int) -> None:
        self.server_group = server_group

    def read(self) -> tuple[float, float, float, float]:
        return (
            time.process_time(),
            self._group_cpu_s(),
            *self._machine_busy_and_total_s(),
        )

    def _group_cpu_s(self) -> float:
        total = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue  # the process ended while we looked
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[2]) == self.server_group:  # pgrp; then utime, stime
                    total += int(fields[11]) + int(fields[12])
        return total / self.clock_ticks

    def _machine_busy_and_total_s(self) -> tuple[float, float]:
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return 0.0, 0.0
        ticks = [int(value) for value in first[:8]]
        idle = ticks[3] + ticks[4]  # idle, iowait
        return (sum(ticks) - idle) / self.clock_ticks, sum(ticks) / self.clock_ticks


@dataclass
class Sample:
    latencies_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    machine_total_s: float = 0.0
    expected: str = "201"  # the status that means success; any other outcome is an error

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def errors(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != self.expected)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def client_cpu_percent(self) -> float:
        return 100 * self.client_cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.requests if self.requests else float("nan")

    @property
    def machine_busy_percent(self) -> float:
        return 100 * self.machine_busy_s / self.machine_total_s if self.machine_total_s else 0.0

    def record(self, outcome: str, latency_s: float) -> None:
        self.outcomes[outcome] += 1
        self.latencies_s.append(latency_s)

    def add_cpu(self, before: tuple[float, ...], after: tuple[float, ...]) -> None:
        client, server, busy, total = (b - a for a, b in zip(before, after, strict=True))
        self.client_cpu_s += client
        self.server_cpu_s += server
        self.machine_busy_s += busy
        self.machine_total_s += total

    def merge(self, other: Sample) -> None:
        self.latencies_s += other.latencies_s
        self.outcomes.update(other.outcomes)
        self.wall_s += other.wall_s
        self.client_cpu_s += other.client_cpu_s
        self.server_cpu_s += other.server_cpu_s
        self.machine_busy_s += other.machine_busy_s
        self.machine_total_s += other.machine_total_s


async def send_one(sender: Sender, path: str, body: bytes) -> str:
    """The outcome of one request: its status code, or the name of what went wrong."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            return str(await sender.send(path, body))
    except TimeoutError:
        return "timeout"
    except (OSError, EOFError, ValueError, ProtocolError, httpx.HTTPError) as exc:
        return type(exc).__name__


async def measure_saturation(
    sender: Sender,
    path: str,
    bodies: Bodies,
    meter: CpuMeter,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> Sample:
    """Closed loop; counts the answers that arrive inside the window after the warm-up."""
    sample = Sample(wall_s=duration_s)
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + duration_s

    async def connection_loop() -> None:
        while (started := time.perf_counter()) < stop_at:
            outcome = await send_one(sender, path, bodies.next())
            finished = time.perf_counter()
            if measure_from <= finished <= stop_at:
                sample.record(outcome, finished - started)

    async def cpu_window() -> None:
        await asyncio.sleep(measure_from - time.perf_counter())
        before = meter.read()
        await asyncio.sleep(stop_at - time.perf_counter())
        sample.add_cpu(before, meter.read())

    await asyncio.gather(cpu_window(), *(connection_loop() for _ in range(concurrency)))
    return sample


async def measure_fixed_rate(
    sender: Sender,
    path: str,
    bodies: Bodies,
    meter: CpuMeter,
    *,
    rate: float,
    duration_s: float,
) -> Sample:
    """Open loop: request i leaves at start + i/rate; latency counts from that moment."""
    sample = Sample(wall_s=duration_s)
    start = time.perf_counter() + 0.05
    before = meter.read()

    async def one(scheduled: float, body: bytes) -> None:
        outcome = await send_one(sender, path, body)
        sample.record(outcome, time.perf_counter() - scheduled)

    tasks = []
    for i in range(round(rate * duration_s)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, bodies.next())))
    await asyncio.gather(*tasks)
    sample.add_cpu(before, meter.read())
    sample.wall_s = max(duration_s, time.perf_counter() - start)
    return sample


# --- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    port: int
    process_group: int


@contextlib.contextmanager
def uvicorn_server(
    app: str, *, workers: int, env: dict[str, str], workdir: Path, label: str
) -> Iterator[Server]:
    """`uvicorn APP --factory --workers N` on a free port, once /health answers."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    log_path = workdir / f"{label}-{port}.log"
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches only this script, which then stops the server
        # and its workers (the whole process group it started) before dropping the database.
        process = subprocess.Popen(
            command,
            cwd=workdir,  # away from the repository's .env, so only `env` configures it
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_healthy(process, port, log_path)
            yield Server(port=port, process_group=process.pid)
        finally:
            stop_process_group(process)


def wait_until_healthy(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /health within 60 s:\n{tail(log_path)}")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    # Workers left behind by a supervisor that died first are in the same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- databases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    name: str
    version: str
    workers: int
    # The anchor's tables and SHVYA with its job worker off share one store; SHVYA with its
    # embedded worker on gets a store of its own, so its worker threads never pick up the
    # jobs the other server enqueues.
    url: str
    api_key: str
    worker_url: str
    worker_api_key: str


def prepare_store(url: str) -> str:
    """SHVYA's schema by its migrations and a company with an agent key (returned)."""
    upgrade_database(url)
    engine = make_engine(url, pool_size=1)
    try:
        session = make_session_factory(engine)()
        with session:
            now = datetime.now(UTC)
            company = onboarding.create_company(session, name="Bench", now=now)
            _, api_key = tenancy.create_api_key(
                session, company_id=company.id, role=Role.agent, name="bench", now=now
            )
            session.commit()
    finally:
        engine.dispose()
    return api_key


def prepare_database(
    name: str, url: str, worker_url: str, *, workers: int, version: str
) -> Database:
    api_key = prepare_store(url)
    anchor_app.create_tables(url)
    return Database(
        name=name,
        version=version,
        workers=workers,
        url=url,
        api_key=api_key,
        worker_url=worker_url,
        worker_api_key=prepare_store(worker_url),
    )


@contextlib.contextmanager
def sqlite_stores(workdir: Path, names: list[str]) -> Iterator[tuple[str, list[str]]]:
    """SQLite's version and the URLs of fresh files, removed at the end."""
    paths = [workdir / f"{name}.db" for name in names]
    try:
        yield sqlite3.sqlite_version, [f"sqlite:///{path}" for path in paths]
    finally:
        for path in paths:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def postgresql_stores(
    base_url: str, suffixes: list[str], *, prefix: str = "bench_ingest"
) -> Iterator[tuple[str, list[str]]]:
    """The server's version and the URLs of fresh schemas, dropped at the end; nothing else in
    the database is touched."""
    stem = f"{prefix}_{secrets.token_hex(4)}"
    schemas = [stem + suffix for suffix in suffixes]
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
            for schema in schemas:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield (
                version,
                [
                    make_url(base_url)
                    .update_query_dict({"options": f"-csearch_path={schema}"})
                    .render_as_string(hide_password=False)
                    for schema in schemas
                ],
            )
        finally:
            with admin.connect() as conn:
                for schema in schemas:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def sqlite_database(workdir: Path, *, workers: int) -> Iterator[Database]:
    """Fresh files; one server process unless asked (several queue on SQLite's write lock)."""
    with sqlite_stores(workdir, ["bench", "bench-worker"]) as (version, urls):
        yield prepare_database("SQLite", *urls, workers=workers, version=version)


@contextlib.contextmanager
def postgresql_database(base_url: str, *, workers: int) -> Iterator[Database]:
    """Fresh schemas for this run, dropped at the end."""
    with postgresql_stores(base_url, ["", "_worker"]) as (version, urls):
        yield prepare_database("PostgreSQL", *urls, workers=workers, version=version)


def wait_for_jobs(url: str, *, timeout_s: float = 120.0) -> float:
    """Seconds until the embedded worker has finished every job enqueued so far."""
    engine = make_engine(url, pool_size=1)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout_s:
            with engine.connect() as conn:
                pending = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')")
                ).scalar()
            if not pending:
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    return time.perf_counter() - started


# --- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration_s: float
    warmup_s: float
    fixed_duration_s: float
    rate: float
    concurrency: int
    rounds: int
    client: str


@dataclass
class Result:
    database: str
    target: str
    workers: int
    saturation: Sample = field(default_factory=Sample)
    fixed: Sample = field(default_factory=Sample)
    fixed_rate: float | None = None  # chosen in the first round, kept for the others
    drain_s: float = 0.0  # waiting for the embedded worker to finish the jobs
    resent: int = 0


# The fixed load must sit below saturation, or its latencies only measure a growing queue.
# A target that cannot take --rate with this margin is measured at half its saturation.
SATURATION_MARGIN = 1.25


def choose_fixed_rate(requested: float, saturation_rps: float) -> float:
    if saturation_rps >= SATURATION_MARGIN * requested:
        return requested
    return max(1.0, round(saturation_rps / 2))


ANCHOR_ONE = "anchor: 1 insert"
ANCHOR_THREE = "anchor: 3 inserts + 1 select"
SHVYA = "SHVYA POST /inbound-message"
SHVYA_WORKER = "SHVYA, embedded job worker on"


@dataclass
class Target:
    name: str
    server: Server
    path: str
    headers: dict[str, str]
    bodies: Bodies
    result: Result
    jobs_url: str | None = None  # where its embedded worker's jobs are, to wait for them
    signer: Signer | None = None


async def measure_round(
    target: Target,
    options: Options,
    *,
    warmup_s: float,
    choose_rate: Callable[[float, float], float] = choose_fixed_rate,
) -> None:
    # Room for the open loop to open more connections if the server falls behind.
    sender = SENDERS[options.client](target.server.port, target.headers, 256, target.signer)
    meter = CpuMeter(target.server.process_group)
    try:
        saturation = await measure_saturation(
            sender,
            target.path,
            target.bodies,
            meter,
            concurrency=options.concurrency,
            warmup_s=warmup_s,
            duration_s=options.duration_s / options.rounds,
        )
        if target.result.fixed_rate is None:
            target.result.fixed_rate = choose_rate(options.rate, saturation.rps)
        await asyncio.sleep(0.5)  # let the server and database settle after the burst
        fixed = await measure_fixed_rate(
            sender,
            target.path,
            target.bodies,
            meter,
            rate=target.result.fixed_rate,
            duration_s=options.fixed_duration_s / options.rounds,
        )
    finally:
        await sender.aclose()
    target.result.resent += sender.resent
    target.result.saturation.merge(saturation)
    target.result.fixed.merge(fixed)


def run_database(
    runner: asyncio.Runner,
    database: Database,
    options: Options,
    phones: PhoneNumbers,
    workdir: Path,
) -> list[Result]:
    """All servers up at once, the targets measured in turn, round after round.

    Interleaving spreads whatever else the machine does (autovacuum, a checkpoint, another
    program) over all targets instead of charging it to whichever ran at that moment.
    """
    print(f"\n{database.name} {database.version}, {database.workers} server process(es):")
    anchor_env = {
        anchor_app.DATABASE_URL_ENV: database.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])),
    }
    shvya_env = {"SHVYA_LOG_LEVEL": "warning", "SHVYA_JOB_ENGINE": "embedded"}

    def server(
        app: str, env: dict[str, str], label: str
    ) -> contextlib.AbstractContextManager[Server]:
        return uvicorn_server(
            app,
            workers=database.workers,
            env=env,
            workdir=workdir,
            label=f"{label}-{database.name}",
        )

    with (
        server("anchor_app:app_from_environment", anchor_env, "anchor") as anchor,
        server(
            "shvya.app:app_from_environment",
            {**shvya_env, "DATABASE_URL": database.url, "SHVYA_SERVE_WORKER": "false"},
            "shvya",
        ) as shvya,
        server(
            "shvya.app:app_from_environment",
            {**shvya_env, "DATABASE_URL": database.worker_url, "SHVYA_SERVE_WORKER": "true"},
            "shvya-worker",
        ) as shvya_worker,
    ):
        plan: list[tuple[str, Server, str, str | None, str | None]] = [
            (ANCHOR_ONE, anchor, "/one-insert", None, None),
            (ANCHOR_THREE, anchor, "/three-inserts", None, None),
            (SHVYA, shvya, "/inbound-message", database.api_key, None),
            (
                SHVYA_WORKER,
                shvya_worker,
                "/inbound-message",
                database.worker_api_key,
                database.worker_url,
            ),
        ]
        targets = [
            Target(
                name=name,
                server=server,
                path=path,
                headers={} if key is None else {"Authorization": f"Bearer {key}"},
                bodies=InboundBodies(phones, tag=f"{database.name}-{i}"),
                result=Result(database.name, name, database.workers),
                jobs_url=jobs_url,
            )
            for i, (name, server, path, key, jobs_url) in enumerate(plan)
        ]
        for round_number in range(options.rounds):
            print(f"  round {round_number + 1}/{options.rounds}:", end="", flush=True)
            for target in targets:
                warmup_s = options.warmup_s if round_number == 0 else min(options.warmup_s, 0.5)
                runner.run(measure_round(target, options, warmup_s=warmup_s))
                if target.jobs_url is not None:
                    # Its worker threads finish the backlog before the next target starts.
                    target.result.drain_s += wait_for_jobs(target.jobs_url)
                print(".", end="", flush=True)
            print()
    for target in targets:
        r = target.result
        print(
            f"  {r.target}: {r.saturation.rps:.1f} req/s, "
            f"{format_errors(r.saturation.outcomes, r.fixed.outcomes)}"
        )
    return [target.result for target in targets]


# --- report ------------------------------------------------------------------------------------


def format_errors(*outcome_sets: Counter[str], ok: str = "201") -> str:
    total: Counter[str] = Counter()
    for outcomes in outcome_sets:
        total.update(outcomes)
    bad = {k: v for k, v in sorted(total.items()) if k != ok}
    return "no errors" if not bad else "errors: " + ", ".join(f"{k} x{v}" for k, v in bad.items())


def ratio(results: list[Result], database: str, target: str) -> float | None:
    by_target = {r.target: r for r in results if r.database == database}
    anchor, other = by_target.get(ANCHOR_ONE), by_target.get(target)
    if anchor is None or other is None or not anchor.saturation.rps:
        return None
    return other.saturation.rps / anchor.saturation.rps


def report(results: list[Result], options: Options) -> str:
    lines = [
        "| database | target | workers | req/s at saturation | p50 ms | p99 ms "
        "| fixed load req/s | p50 ms | p99 ms | errors | of 1-insert anchor "
        "| server CPU ms/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        share = ratio(results, r.database, r.target)
        fixed_rate = f"{r.fixed_rate:g}" + ("" if r.fixed_rate == options.rate else " *")
        lines.append(
            f"| {r.database} | {r.target} | {r.workers} | {r.saturation.rps:.0f} "
            f"| {r.saturation.percentile_ms(0.50):.1f} | {r.saturation.percentile_ms(0.99):.1f} "
            f"| {fixed_rate} "
            f"| {r.fixed.percentile_ms(0.50):.1f} | {r.fixed.percentile_ms(0.99):.1f} "
            f"| {r.saturation.errors + r.fixed.errors} "
            f"| {'' if share is None else f'{share:.0%}'} "
            f"| {r.saturation.server_cpu_ms_per_request:.2f} |"
        )
    if any(r.fixed_rate != options.rate for r in results):
        lines.append(
            f"\n\\* below {SATURATION_MARGIN:g} x {options.rate:g} req/s at saturation, "
            "so measured at half its saturation instead"
        )
    lines.append("")
    for database in dict.fromkeys(r.database for r in results):
        workers = next(r.workers for r in results if r.database == database)
        for target in (ANCHOR_THREE, SHVYA, SHVYA_WORKER):
            share = ratio(results, database, target)
            if share is None:
                continue
            verdict = ""
            if target == SHVYA and database == "PostgreSQL" and workers == TARGET_WORKERS:
                met = "met" if share >= TARGET_RATIO else "NOT met"
                verdict = f" (target >= {TARGET_RATIO:.0%} with {TARGET_WORKERS} workers: {met})"
            lines.append(f"- {database}: {target} / {ANCHOR_ONE} = {share:.0%}{verdict}")
    lines.append("")
    for r in results:
        sat, fixed = r.saturation, r.fixed
        lines.append(
            f"- {r.database} {r.target}: {format_errors(sat.outcomes, fixed.outcomes)}; "
            f"{sat.requests} requests at saturation, {fixed.requests} at {r.fixed_rate:g} req/s; "
            f"during saturation the client used {sat.client_cpu_percent:.0f}% of a core "
            f"and the machine was {sat.machine_busy_percent:.0f}% busy"
            + (
                f"; its worker took {r.drain_s:.1f} s more to finish the jobs"
                if r.drain_s >= 0.05
                else ""
            )
            + (
                f"; {r.resent} requests resent on a new connection (the server had closed "
                "the idle one)"
                if r.resent
                else ""
            )
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds at saturation")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--fixed-duration", type=float, default=None, help="seconds at --rate [--duration]"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="fixed offered load, req/s")
    parser.add_argument("--concurrency", type=int, default=32, help="connections at saturation")
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds the durations are split into"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn processes on PostgreSQL")
    parser.add_argument(
        "--sqlite-workers",
        type=int,
        default=1,
        help="uvicorn processes on SQLite (more than 1 only to show the write-lock contention)",
    )
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database only")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL database to make a temporary schema in [env: BENCH_POSTGRES_URL]",
    )
    parser.add_argument(
        "--client", choices=sorted(SENDERS), default="raw", help="load generator's HTTP client"
    )
    return parser.parse_args(argv)


def script_command(script: str, arguments: list[str], postgres_url: str) -> str:
    """This Python and `script`, relative to the repository, with `arguments`; the PostgreSQL
    URL (password hidden) only when it is not the default."""
    parts = [os.path.relpath(sys.executable, REPO_DIR), os.path.relpath(script, REPO_DIR)]
    parts += arguments
    if postgres_url != DEFAULT_POSTGRES_URL:
        parts.append("--postgres-url=" + make_url(postgres_url).render_as_string())
    return shlex.join(parts)


def reproduce_command(args: argparse.Namespace, options: Options) -> str:
    parts = [
        f"--duration={options.duration_s:g}",
        f"--warmup={options.warmup_s:g}",
        f"--fixed-duration={options.fixed_duration_s:g}",
        f"--rate={options.rate:g}",
        f"--concurrency={options.concurrency}",
        f"--rounds={options.rounds}",
        f"--workers={args.workers}",
        f"--sqlite-workers={args.sqlite_workers}",
        f"--client={options.client}",
    ]
    if args.only:
        parts.append(f"--only={args.only}")
    return script_command(__file__, parts, args.postgres_url)


def warn_if_busy() -> None:
    """The figures are only worth comparing on an otherwise idle machine."""
    with contextlib.suppress(OSError, ValueError):
        load = float(Path("/proc/loadavg").read_text().split()[0])
        if load > 0.5:
            print(
                f"warning: load average {load:.2f} before starting: something else is using "
                "the CPU, so throughput will be lower and noisier than on an idle machine",
                flush=True,
            )


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        fixed_duration_s=args.fixed_duration if args.fixed_duration is not None else args.duration,
        rate=args.rate,
        concurrency=args.concurrency,
        rounds=max(1, args.rounds),
        client=args.client,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up on `kill` as on Ctrl-C
    command = reproduce_command(args, options)
    print(
        f"SHVYA ingest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, client: {options.client}\n"
        f"reproduce: cd {REPO_DIR} && {command}",
        flush=True,
    )
    warn_if_busy()
    phones = PhoneNumbers()
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="shvya-bench-") as tmp,
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        workdir = Path(tmp)
        if args.only in (None, "sqlite"):
            with sqlite_database(workdir, workers=args.sqlite_workers) as database:
                results += run_database(runner, database, options, phones, workdir)
        if args.only in (None, "postgresql"):
            with postgresql_database(args.postgres_url, workers=args.workers) as database:
                results += run_database(runner, database, options, phones, workdir)
    print(f"\n{report(results, options)}\n\nreproduce: cd {REPO_DIR} && {command}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, benchmark schema and files removed", file=sys.stderr)
        sys.exit(130)
