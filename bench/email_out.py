"""Email throughput: 5,000 emails through SHVYA's send job, router and email adapter, against
a bare aiosmtplib loop sending the same 5,000 over one connection, in the same run, both to an
aiosmtpd sink on 127.0.0.1 (tests/fakes/smtp_sink.py) that counts connections and keeps every
message (docs/email.md).

SHVYA's side is real: a SQLite database migrated to head, one company with its SMTP account
(stored as POST /channels/email stores it), 5,000 leads with an email contact, a person's
message queued for each (`queue_person_message`: the router's preflight, the `queued` row, the
agent.reply job), then the embedded worker runs the jobs: each asks the router again (policies,
suppression), writes `sending`, composes (Message-ID, List-Unsubscribe, both parts) and hands the
bytes to the account's SMTP transport, which keeps one connection open. Some addresses are
suppressed after their message was queued, so the router must refuse them at send time.

Timed: the worker's run (SHVYA) and the bare loop's sends (pre-composed bytes, nothing else).
Checked: messages/s of both and the ratio (target: SHVYA >= 50% of bare), connections at the
sink, 0 duplicate Message-IDs, 0 messages to suppressed addresses. A missed target prints
MISSED and still exits 0 (the other benchmarks of `make bench` go on); a broken invariant
(duplicates, a suppressed address reached) exits 1.

Reproduce: `make .venv/.installed && .venv/bin/python bench/email_out.py` (`--emails N`,
`--suppressed N`).
"""

from __future__ import annotations

import os
import sys

# Not named email.py: as a script in bench/, that folder is first on sys.path, and a module
# named `email` there would shadow the standard library's for every bench script.
_HERE = os.path.dirname(os.path.abspath(__file__))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import aiosmtplib  # noqa: E402

sys.path.insert(0, os.path.dirname(_HERE))

from shvya.channels import service as channels  # noqa: E402
from shvya.channels.email import compose_email  # noqa: E402
from shvya.channels.schemas import OutboundContent  # noqa: E402
from shvya.config import Settings  # noqa: E402
from shvya.crm import service as crm  # noqa: E402
from shvya.crm.models import Channel, SuppressionReason  # noqa: E402
from shvya.crm.schemas import ContactIn, LeadCreateIn  # noqa: E402
from shvya.db.engine import make_engine, make_session_factory  # noqa: E402
from shvya.db.migrate import upgrade_database  # noqa: E402
from shvya.handlers import default_handlers  # noqa: E402
from shvya.jobs.engines.embedded import EmbeddedWorker  # noqa: E402
from shvya.onboarding import create_company  # noqa: E402
from tests.fakes.smtp_sink import SmtpSink  # noqa: E402

FROM = "bench@shvya.example"
SUBJECT = "Your quote from SHVYA Bench"
TEXT = "Hello,\n\nHere is the quote you asked for. Reply with any questions.\n\nThe team"


class FixedClock:
    """10:00 UTC today: inside any quiet-hours window for a lead in the company's UTC zone."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)

    def now(self) -> datetime:
        return self.moment


def address(i: int) -> str:
    return f"lead{i:05d}@example.org"


def shvya_run(workdir: Path, sink: SmtpSink, emails: int, suppressed: int) -> tuple[float, int]:
    """Seconds the worker took to send `emails` queued messages, and how many it refused."""
    url = f"sqlite:///{workdir / 'bench.db'}"
    upgrade_database(url)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=url, public_url="https://shvya.example"
    )
    engine = make_engine(url, pool_size=1)
    clock = FixedClock()
    factory = make_session_factory(engine)
    with factory() as session:
        company = create_company(session, name="Bench", now=clock.now())
        channels.store_email_account(
            session,
            company_id=company.id,
            from_email=FROM,
            config={
                "provider": "smtp",
                "from_name": "SHVYA Bench",
                "host": "127.0.0.1",
                "port": sink.port,
                "security": "none",
            },
            secret=None,
            name="bench",
            settings=settings,
            actor="bench",
            now=clock.now(),
        )
        lead_ids = []
        for i in range(emails):
            lead = crm.create_lead(
                session,
                company_id=company.id,
                data=LeadCreateIn(contacts=[ContactIn(channel="email", value=address(i))]),
                region="US",
                actor="bench",
                now=clock.now(),
            )
            lead_ids.append(lead.id)
        session.commit()
        for lead_id in lead_ids:
            channels.queue_person_message(
                session,
                company_id=company.id,
                lead_id=lead_id,
                channel=Channel.email,
                content=OutboundContent(subject=SUBJECT, text=TEXT),
                actor="bench",
                settings=settings,
                now=clock.now(),
            )
        # Opted out after their message was queued: the router must refuse them when sending.
        for i in range(0, emails, max(1, emails // max(1, suppressed)))[:suppressed]:
            crm.add_suppression(
                session,
                company_id=company.id,
                channel=Channel.email.value,
                address=address(i),
                reason=SuppressionReason.opt_out,
                source="manual",
                actor="bench",
                now=clock.now(),
            )
        session.commit()
    worker = EmbeddedWorker(engine, handlers=default_handlers(), clock=clock, settings=settings)
    started = time.perf_counter()
    worker.run_until_idle(max_jobs=emails + 10)
    seconds = time.perf_counter() - started
    channels.close_email_transports()
    engine.dispose()
    return seconds, suppressed


async def bare_loop(port: int, messages: list[tuple[str, bytes]]) -> float:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    started = time.perf_counter()
    for to, raw in messages:
        await smtp.sendmail(FROM, [to], raw)
    seconds = time.perf_counter() - started
    await smtp.quit()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--suppressed", type=int, default=50)
    args = parser.parse_args()
    print(f"email bench: {args.emails} emails, {args.suppressed} suppressed, sink on 127.0.0.1")

    with SmtpSink() as bare_sink:
        composed = [
            (
                address(i),
                compose_email(
                    from_address=FROM,
                    from_name="SHVYA Bench",
                    to=address(i),
                    subject=SUBJECT,
                    text=TEXT,
                    html=None,
                    unsubscribe_url="https://shvya.example/unsubscribe/x",
                    unsubscribe_mailto=f"mailto:{FROM}",
                ).raw,
            )
            for i in range(args.emails)
        ]
        bare_seconds = asyncio.run(bare_loop(bare_sink.port, composed))
        bare_count, bare_connections = len(bare_sink.received), bare_sink.connections

    with SmtpSink() as sink, tempfile.TemporaryDirectory(prefix="shvya-email-bench-") as tmp:
        shvya_seconds, suppressed = shvya_run(Path(tmp), sink, args.emails, args.suppressed)
        received = list(sink.received)
        connections = sink.connections

    suppressed_addresses = {
        address(i)
        for i in range(0, args.emails, max(1, args.emails // max(1, args.suppressed)))[
            : args.suppressed
        ]
    }
    ids = Counter(r.message["Message-ID"] for r in received)
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    to_suppressed = sum(1 for r in received for to in r.recipients if to in suppressed_addresses)
    sent = len(received)
    shvya_rate = sent / shvya_seconds if shvya_seconds else 0.0
    bare_rate = bare_count / bare_seconds if bare_seconds else 0.0
    ratio = shvya_rate / bare_rate if bare_rate else 0.0
    print(
        f"bare aiosmtplib loop: {bare_count} in {bare_seconds:.2f}s = {bare_rate:,.0f} msg/s, "
        f"{bare_connections} connection(s)"
    )
    print(
        f"SHVYA send jobs:      {sent} in {shvya_seconds:.2f}s = {shvya_rate:,.0f} msg/s, "
        f"{connections} connection(s), {suppressed} refused as suppressed"
    )
    print(f"ratio: {ratio:.0%} of bare (target >= 50%)")
    print(
        f"duplicates (Message-ID seen twice): {duplicates}; to suppressed addresses: "
        f"{to_suppressed}"
    )
    ok = duplicates == 0 and to_suppressed == 0 and sent == args.emails - suppressed
    if not ok:
        print("FAILED: an invariant broke (duplicates, suppressed reached, or missing emails)")
        return 1
    print("target met" if ratio >= 0.5 else "MISSED: SHVYA below 50% of the bare loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
