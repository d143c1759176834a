"""Shared by bench/queue.py and bench/chaos.py: processes, schemas, brokers, figures.

Every process a benchmark starts runs in its own session (process group), is registered
here and is ended at exit, also on Ctrl-C or SIGTERM; every schema and broker queue it
creates is dropped in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

import shvya
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import upgrade_database
from shvya.jobs.service import enqueue_job
from shvya.onboarding import create_company

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SHVYA_SRC = Path(shvya.__file__).resolve().parents[1]
PYTHON = sys.executable
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"


def now() -> datetime:
    return datetime.now(UTC)


def say(message: str = "") -> None:
    print(message, flush=True)


# --- the machine -------------------------------------------------------------------------------


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """How busy both cores were over the last `seconds` (from /proc/stat; 0 if unreadable)."""

    def sample() -> tuple[int, int]:
        try:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        except (OSError, ValueError):
            return 0, 0
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # busy (all but idle, iowait), all

    busy0, all0 = sample()
    time.sleep(seconds)
    busy1, all1 = sample()
    return 100 * (busy1 - busy0) / (all1 - all0) if all1 > all0 else 0.0


def wait_for_quiet_machine(threshold: float = 1.5, max_wait_s: float = 120.0) -> float:
    """Wait (at most max_wait_s) until the 1-minute load average is below threshold: other
    test runs share these 2 cores. The load average trails by a minute, so it also counts the
    benchmark's own previous run: the wait ends early when the cores have been nearly idle
    (under 15% busy) for the last 2 seconds. Returns the load average at the start."""
    deadline = time.monotonic() + max_wait_s
    load = os.getloadavg()[0]
    if load < threshold:
        return load
    say(f"    load average {load:.2f} >= {threshold}: waiting (up to {max_wait_s:.0f} s)")
    while time.monotonic() < deadline:
        busy = cpu_busy_percent(2.0)
        load = os.getloadavg()[0]
        if load < threshold or busy < 15:
            say(f"    load average {load:.2f}, cores {busy:.0f}% busy over the last 2 s: go")
            return load
    say(f"    load average still {load:.2f}: measuring anyway (figures may be low)")
    return load


def machine_description() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


# --- processes ---------------------------------------------------------------------------------


class Processes:
    """Every child process of a benchmark, each the leader of its own process group."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self._log_dir: Path | None = None

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="shvya-bench-logs-"))
        return self._log_dir

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"{name}-{secrets.token_hex(3)}.log"
        with path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=REPO_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.logs[process.pid] = path
        self.running.append(process)
        return process

    def wait(self, process: subprocess.Popen[bytes], timeout: float) -> int:
        """Wait for a process that ends by itself; kill its group if it does not."""
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)
            raise
        finally:
            if process in self.running:
                self.running.remove(process)

    @staticmethod
    def group_pids(process: subprocess.Popen[bytes]) -> set[int]:
        """The pids in the process's group (the process and the children it started)."""
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == process.pid:
                pids.add(int(entry.name))
        return pids

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9 the whole group, at once."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process in self.running:
            self.running.remove(process)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 40.0) -> int | None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        code: int | None = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = process.wait(timeout=timeout)
        # Also the group's children that outlived their parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process in self.running:
            self.running.remove(process)
        return code

    def stop_all(self, timeout: float = 40.0) -> None:
        for process in list(self.running):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in list(self.running):
            self.stop(process, timeout=timeout)

    def kill_all(self) -> None:
        for process in list(self.running):
            self.kill(process)

    def tail(self, process: subprocess.Popen[bytes], lines: int = 15) -> str:
        try:
            content = self.logs[process.pid].read_text(errors="replace")
            return "\n".join(content.splitlines()[-lines:])
        except (OSError, KeyError):
            return ""


PROCESSES = Processes()


def install_signal_handlers() -> None:
    """SIGTERM ends a benchmark like Ctrl-C: the `finally` blocks clean up."""

    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


@contextlib.contextmanager
def cleanup_on_exit() -> Iterator[None]:
    """End every process left; keep the worker logs only when something failed."""
    install_signal_handlers()
    try:
        yield
    except BaseException:
        say(f"worker logs kept in {PROCESSES.log_dir}")
        raise
    else:
        if PROCESSES._log_dir is not None:
            shutil.rmtree(PROCESSES._log_dir, ignore_errors=True)
    finally:
        PROCESSES.kill_all()


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def shvya_env(database_url: str, *, handlers: str, **extra: str) -> dict[str, str]:
    """The environment of a `shvya worker` process running the benchmark's handlers."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SHVYA_", "CELERY_")) and key != "DATABASE_URL"
    }
    env.update(
        {
            # The repository (for bench.*) and the SHVYA this process imported: an export
            # of a commit given on PYTHONPATH is what the workers run too, not the working
            # tree (the virtualenv's editable install points at the repository's src/).
            "PYTHONPATH": os.pathsep.join([str(REPO_DIR), str(SHVYA_SRC)]),
            "DATABASE_URL": database_url,
            "SHVYA_JOB_HANDLERS": handlers,
            "SHVYA_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def shvya_worker_argv(*, engine: str, threads: int, p1_threads: int = 1) -> list[str]:
    return [
        PYTHON, "-m", "shvya", "worker", "--engine", engine,
        "--threads", str(threads), "--p1-threads", str(p1_threads),
    ]  # fmt: skip


# --- PostgreSQL --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgSchema:
    name: str
    url: str  # SQLAlchemy URL whose connections use the schema

    @property
    def conninfo(self) -> str:
        """The same as a libpq URL (for psycopg and procrastinate)."""
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)


def schema_url(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def pg_schema(base_url: str, tag: str) -> Iterator[PgSchema]:
    """A fresh schema, dropped at the end (also on Ctrl-C)."""
    name = f"bench_{tag}_{secrets.token_hex(4)}"
    admin = make_engine(base_url, pool_size=1)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        yield PgSchema(name=name, url=schema_url(base_url, name))
    finally:
        PROCESSES.kill_all()  # nothing may hold a lock on the schema's tables now
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def vacuum_analyze(engine: Engine, table: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {table}"))


# --- SHVYA -------------------------------------------------------------------------------------


@dataclass
class ShvyaDb:
    url: str
    engine: Engine
    session_factory: sessionmaker[Session]
    company_id: uuid.UUID

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def dispose(self) -> None:
        self.engine.dispose()


def migrated_shvya_db(url: str) -> ShvyaDb:
    upgrade_database(url)
    engine = make_engine(url, pool_size=4)
    factory = make_session_factory(engine)
    with factory() as session:
        company = create_company(session, name=f"bench-{secrets.token_hex(3)}", now=now())
        session.commit()
    return ShvyaDb(url=url, engine=engine, session_factory=factory, company_id=company.id)


def enqueue_jobs(
    factory: sessionmaker[Session],
    company_id: uuid.UUID,
    job_type: str,
    count: int,
    *,
    per_transaction: int = 1000,
) -> list[uuid.UUID]:
    """`count` jobs through shvya.jobs.service.enqueue_job, `per_transaction` per commit."""
    ids: list[uuid.UUID] = []
    while len(ids) < count:
        with factory() as session:
            for _ in range(min(per_transaction, count - len(ids))):
                job_id, _created = enqueue_job(
                    session, job_type, {"n": len(ids)}, company_id=company_id, now=now()
                )
                ids.append(job_id)
            session.commit()
    return ids


def job_status_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            status: count
            for status, count in conn.execute(
                text("SELECT status, count(*) FROM jobs GROUP BY status")
            )
        }


def unfinished_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')")
            ).scalar_one()
        )


# --- brokers -----------------------------------------------------------------------------------


def broker_reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def delete_broker_queues(url: str, names: Sequence[str]) -> None:
    """Delete the queues and what the broker keeps about them. On Redis, kombu's queue_delete
    only forgets the bindings its own channel declared (a new connection deletes nothing), so
    the keys go directly: the lists, the bindings, and our messages left in `unacked`."""
    if url.startswith("redis"):
        _delete_redis_queues(url, names)
        return
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(url, connect_timeout=2) as conn:
        channel = conn.default_channel
        for name in names:
            with contextlib.suppress(Exception):
                channel.queue_delete(queue=name)


def _delete_redis_queues(url: str, names: Sequence[str]) -> None:
    import json

    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in names:
            keys = [name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"]
            keys += [k.decode() for k in client.scan_iter(match=f"{name}\x06\x16*")]
            client.delete(*keys)
        for tag, payload in client.hgetall("unacked").items():
            with contextlib.suppress(ValueError, IndexError, TypeError):
                _message, exchange, routing_key = json.loads(payload)
                if exchange in names or routing_key in names:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
        # Celery's remote-control mailbox bookkeeping, once no worker node is bound to it.
        if not client.exists("_kombu.binding.celery.pidbox"):
            client.zrem("_kombu.binding_deadlines", "celery.pidbox")
    finally:
        client.close()


def broker_label(url: str) -> str:
    return "RabbitMQ" if url.startswith(("amqp", "pyamqp")) else "Redis"


# --- figures -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def window_rate(finish_times: Sequence[float], start: float, end: float) -> float:
    """Jobs per second between the start-th and the end-th fraction of the completions."""
    ordered = sorted(finish_times)
    if len(ordered) < 2:
        return float("nan")
    first = int(start * (len(ordered) - 1))
    last = int(end * (len(ordered) - 1))
    elapsed = ordered[last] - ordered[first]
    return (last - first) / elapsed if elapsed > 0 else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def fmt_rate(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"  # NaN check


def fmt_ratio(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}x"
