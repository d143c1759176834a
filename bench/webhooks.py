"""Signed WhatsApp Cloud API deliveries per second through the real HTTP server, beside an anchor.

For each database (SQLite, then PostgreSQL) this starts uvicorn servers with the same
options as bench/ingest.py (`--factory --workers N --log-level warning --no-access-log`):

- the anchor (bench/anchor_app.py), inserting one bare row per request (`/one-insert`): the
  foundation's bare-insert anchor, measured in the same run;
- SHVYA (`shvya.app:app_from_environment`) with META_APP_SECRET set and its embedded job
  worker off (SHVYA_SERVE_WORKER=false: the `ai.engage` job each message enqueues waits in the
  table, as it would for `shvya worker`), receiving `POST /webhooks/whatsapp`; one server per
  SHVYA target below, on the same store.

Before SHVYA starts, its store gets a company, the company's WhatsApp number (a `wa_cloud`
channel account for the deliveries' phone_number_id, as `channels.store_whatsapp_account` makes it)
and, for the status callbacks, leads with outbound messages in status `sent`, each with a
wamid. Every delivery is built by the payload builder the tests use
(tests/fakes/meta_graph.py: Meta's envelope, escaped unicode) and signed like Meta signs it
(X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the exact bytes, with the app
secret); the client signs each body as it sends it. SHVYA is measured twice:

- new messages: every delivery is one text message with a wamid of its own; three in four
  come from a new number (a new lead), the fourth from a recent sender, as in bench/ingest.py;
- mix: of every ten deliveries, six new messages (as above), one redelivery (the very bytes
  and signature of a message delivered about a hundred deliveries earlier: SHVYA answers 200
  and stores nothing) and three status callbacks (`sent`, `delivered`, `read`) for the
  outbound messages, spaced so each message gets its `delivered` 50 deliveries after its
  `sent` and its `read` 50 after that. `sent` is a no-op (the message is `sent` already, as
  SHVYA leaves it after the send); the other two move it forward and write an event.

Each target is measured at saturation (32 keep-alive connections, each sending its next request
when the last is answered) and at a fixed offered load, 200 deliveries/s by default, the
issue's target (open loop: requests leave on a timer whatever the server does, latency counts
from each request's scheduled send time, to the 200 answer). Unlike bench/ingest.py, the fixed
load is not lowered for a target that cannot take it: if SHVYA cannot keep up with 200/s, its
p99 says so. For a SHVYA row that misses the target (p99 < 50 ms at 200/s), shorter open-loop
probes below its saturation look for a rate it does sustain with p99 under 50 ms. Targets take
turns in rounds, as in bench/ingest.py. After each database the benchmark counts what the
store holds, so a delivery SHVYA answered 200 without storing it (an unknown phone_number_id,
say) shows up as a failed check, not as a fast figure. Any answer other than 200 (SHVYA) or
201 (anchor) is an error and is reported.

An overload leaves requests behind: the client gives up on one after 30 s, but the server
still works through everything it accepted. After each SHVYA turn the benchmark waits until
the server answers an empty signed delivery promptly; a server that has not done so 15 s later
is stuck, not slow, and is restarted (reported as "stuck"), so the next turn starts clean.

SQLite runs with one server process, PostgreSQL with --workers (2 by default), in a fresh
schema of the `test` database; both are removed at the end, also on Ctrl-C.

    make bench                                             # this part: about 13 minutes
    .venv/bin/python bench/webhooks.py --quick             # a smoke run, about 2 minutes
    .venv/bin/python bench/webhooks.py --only postgresql   # the issue's target alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anchor_app
import ingest
from common import wait_for_quiet_machine
from ingest import (
    ANCHOR_ONE,
    DEFAULT_POSTGRES_URL,
    SENDERS,
    CpuMeter,
    InboundBodies,
    Options,
    PhoneNumbers,
    Result,
    Sample,
    Signer,
    Target,
    format_errors,
    measure_fixed_rate,
    measure_round,
    new_event_loop,
    postgresql_stores,
    ratio,
    script_command,
    sqlite_stores,
    uvicorn_server,
    warn_if_busy,
)
from sqlalchemy import func, select

import shvya
from shvya import onboarding
from shvya.channels import service as channels
from shvya.channels.schemas import WhatsAppAccountIn
from shvya.config import Settings
from shvya.conversations import service as conversations
from shvya.conversations.models import Direction, Message, MessageStatus
from shvya.crm.models import Channel
from shvya.db.engine import make_engine, make_session_factory
from shvya.db.migrate import upgrade_database

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
if str(REPO_DIR) not in sys.path:
    sys.path.append(str(REPO_DIR))  # for tests.fakes.meta_graph, the tests' payload builder
from tests.fakes.meta_graph import FakeMetaGraph, serialise_webhook  # noqa: E402

# The target: p99 under 50 ms at 200 deliveries/s on PostgreSQL with 2 workers.
TARGET_RATE = 200.0
TARGET_P99_MS = 50.0
TARGET_WORKERS = 2

APP_SECRET = "bench-app-secret"
ACCESS_TOKEN = "EAAG-bench-token-0000"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
WEBHOOK_PATH = "/webhooks/whatsapp"

SHVYA_NEW = "SHVYA webhook: new messages"
SHVYA_MIX = "SHVYA webhook: mix (60% new, 10% redelivered, 30% statuses)"

SEED_LEADS = 100  # the leads the seeded outbound messages went to

# Defaults of the options --quick shortens.
FULL = {"duration": 10.0, "warmup": 2.0, "rounds": 2, "probes": 3, "probe_duration": 4.0,
        "outbound": 3000}  # fmt: skip
QUICK = {"duration": 2.0, "warmup": 0.5, "rounds": 1, "probes": 1, "probe_duration": 2.0,
         "outbound": 300}  # fmt: skip


# --- what is sent ------------------------------------------------------------------------------


def signer_for(app_secret: str) -> Signer:
    key = app_secret.encode()

    def sign(body: bytes) -> dict[str, str]:
        digest = hmac.new(key, body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={digest}"}

    return sign


@dataclass(frozen=True)
class Outbound:
    wamid: str
    wa_id: str  # the recipient, as Meta names it in a status


@dataclass
class Sent:
    """What a target's deliveries asked SHVYA to store, to check the store against."""

    new_messages: int = 0
    redeliveries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    # Per outbound message (by index), the furthest status delivered for it.
    furthest: dict[int, str] = field(default_factory=dict)
    wrapped: bool = False  # more statuses than seeded messages: later ones are no-ops


class Deliveries:
    """Signed-delivery bodies for one target: new messages only, or the mix."""

    RANK = {"sent": 0, "delivered": 1, "read": 2}
    # Slot in every ten deliveries -> (status, how many groups of ten back its message is).
    STATUS_SLOTS = {2: ("sent", 0), 5: ("delivered", 5), 8: ("read", 10)}
    REDELIVERY_SLOT = 9

    def __init__(
        self,
        meta: FakeMetaGraph,
        phones: PhoneNumbers,
        tag: str,
        *,
        mix: bool = False,
        outbound: list[Outbound] | None = None,
    ) -> None:
        self._meta = meta
        self._phones = phones
        self.wamid_prefix = f"wamid.bench-{tag}-"
        self._mix = mix
        self._outbound = outbound or []
        self._count = 0
        self._new = 0
        self._recent: deque[str] = deque(maxlen=500)  # senders, for repeat messages
        self._to_redeliver: deque[bytes] = deque(maxlen=60)
        self.sent = Sent()

    def next(self) -> bytes:
        n = self._count
        self._count += 1
        if self._mix:
            slot, group = n % 10, n // 10
            if slot in self.STATUS_SLOTS:
                status, back = self.STATUS_SLOTS[slot]
                if group >= back and self._outbound:
                    return self._status(group - back, status)
            elif slot == self.REDELIVERY_SLOT and len(self._to_redeliver) == 60:
                self.sent.redeliveries += 1
                return self._to_redeliver.popleft()
        return self._new_message()

    def _new_message(self) -> bytes:
        n = self._new
        self._new += 1
        if n % 4 == 3 and self._recent:
            wa_id = self._recent[(n * 7919) % len(self._recent)]
        else:
            wa_id = self._phones.new().removeprefix("+")
            self._recent.append(wa_id)
        item = self._meta.inbound_item(
            wa_id, "Hi! How much is the pro plan?", name="Bench Lead", wamid=self.wamid(n)
        )
        body = serialise_webhook(self._meta.envelope([item]))
        self.sent.new_messages += 1
        if self._mix:
            self._to_redeliver.append(body)
        return body

    def wamid(self, n: int) -> str:
        return f"{self.wamid_prefix}{n:08d}"

    def _status(self, index: int, status: str) -> bytes:
        if index >= len(self._outbound):
            self.sent.wrapped = True
        index %= len(self._outbound)
        message = self._outbound[index]
        item = self._meta.status_item(message.wamid, status, recipient_id=message.wa_id)
        self.sent.statuses[status] += 1
        if self.RANK[status] > self.RANK.get(self.sent.furthest.get(index, ""), -1):
            self.sent.furthest[index] = status
        return serialise_webhook(self._meta.envelope([item]))


# --- the store ---------------------------------------------------------------------------------


def shvya_settings(url: str) -> Settings:
    # No .env: the servers run away from the repository's, with their defaults.
    return Settings(_env_file=None, database_url=url, meta_app_secret=APP_SECRET)  # type: ignore[call-arg]


def prepare_store(url: str, phones: PhoneNumbers, *, outbound: int) -> list[Outbound]:
    """SHVYA's schema, a company with its WhatsApp number, `outbound` messages sent to
    SEED_LEADS leads (returned), and the anchor's tables."""
    upgrade_database(url)
    anchor_app.create_tables(url)
    settings = shvya_settings(url)
    engine = make_engine(url, pool_size=1)
    seeded: list[Outbound] = []
    try:
        session = make_session_factory(engine)()
        with session:
            now = datetime.now(UTC)
            company = onboarding.create_company(session, name="Bench", now=now)
            # Stored as connect_whatsapp stores it once Meta has confirmed the number: the
            # bench measures deliveries, not the check with Meta.
            account = channels.store_whatsapp_account(
                session,
                company_id=company.id,
                data=WhatsAppAccountIn(
                    phone_number_id=PHONE_NUMBER_ID,
                    access_token=ACCESS_TOKEN,
                    waba_id=WABA_ID,
                    display_phone_number="15550783881",
                ),
                verified=channels.VerifiedNumber(
                    phone_number_id=PHONE_NUMBER_ID,
                    waba_id=WABA_ID,
                    display_phone_number="15550783881",
                    verified_name=None,
                ),
                settings=settings,
                actor="bench",
                now=now,
            )
            leads = []
            for i in range(SEED_LEADS):
                wa_id = phones.new().removeprefix("+")
                result = conversations.receive_inbound_message(
                    session,
                    company_id=company.id,
                    message=conversations.InboundMessage(
                        channel=Channel.wa_cloud,
                        sender=f"+{wa_id}",
                        text="hello",
                        name="Seed Lead",
                        external_id=f"wamid.seed-{i:08d}",
                    ),
                    region="US",
                    actor="bench",
                    now=now,
                )
                leads.append((result.lead_id, wa_id))
            for i in range(outbound):
                lead_id, wa_id = leads[i % len(leads)]
                wamid = f"wamid.out-{i:08d}"
                session.add(
                    Message(
                        company_id=company.id,
                        lead_id=lead_id,
                        channel=Channel.wa_cloud.value,
                        channel_account_id=account.id,
                        direction=Direction.outbound.value,
                        text="Our pro plan is 49 EUR a month.",
                        status=MessageStatus.sent.value,
                        external_id=wamid,
                        send_key=f"bench-{i}",
                        meta={},
                        created_at=now,
                        updated_at=now,
                        sent_at=now,
                    )
                )
                seeded.append(Outbound(wamid=wamid, wa_id=wa_id))
            session.commit()
    finally:
        engine.dispose()
    return seeded


def check_store(url: str, deliveries: Deliveries, *, errors: int = 0) -> tuple[bool, str]:
    """Whether the store holds what the deliveries asked for, and a line saying so.

    A delivery answered 200 must be stored; one that failed (`errors`: a timeout, a 500) may
    or may not have been, so with errors the count only has to fall within their number."""
    sent = deliveries.sent
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.direction == Direction.inbound.value,
                    Message.external_id.like(deliveries.wamid_prefix + "%"),
                )
            ).scalar_one()
            by_status = dict(
                conn.execute(
                    select(Message.status, func.count())
                    .where(Message.direction == Direction.outbound.value)
                    .group_by(Message.status)
                ).all()
            )
    finally:
        engine.dispose()
    ok = sent.new_messages - errors <= stored <= sent.new_messages
    line = f"stored {stored} of {sent.new_messages} new messages"
    if errors:
        line += f" ({errors} deliveries failed, so at least {sent.new_messages - errors})"
    if sent.redeliveries:
        line += f", {sent.redeliveries} redeliveries (each answered without a second row)"
    if sent.statuses:
        furthest = Counter(sent.furthest.values())
        line += (
            f"; statuses sent: {', '.join(f'{n} {s}' for s, n in sorted(sent.statuses.items()))}"
            f"; outbound messages now read {by_status.get('read', 0)} (expected "
            f"{furthest['read']}), delivered {by_status.get('delivered', 0)} (expected "
            f"{furthest['delivered']})"
        )
        if errors:
            line += " (not checked: some deliveries failed)"
        elif not sent.wrapped:  # once statuses wrap round, counts cannot be predicted
            ok = ok and by_status.get("read", 0) == furthest["read"]
            ok = ok and by_status.get("delivered", 0) == furthest["delivered"]
        else:
            line += " (statuses wrapped round the seeded messages: not checked)"
    return ok, ("check ok: " if ok else "CHECK FAILED: ") + line


# --- one database ------------------------------------------------------------------------------


@dataclass
class Probe:
    rate: float
    sample: Sample

    @property
    def sustained(self) -> bool:
        return meets_target(self.sample, self.rate)


@dataclass
class Row:
    result: Result
    probes: list[Probe] = field(default_factory=list)
    check: str = ""
    check_ok: bool = True
    drained_s: float = 0.0  # the server still busy with requests the client had given up on
    restarts: int = 0  # times its server answered nothing DRAIN_TIMEOUT_S after a turn

    @property
    def sustained(self) -> Probe | None:
        return next((p for p in self.probes if p.sustained), None)


def meets_target(sample: Sample, rate: float) -> bool:
    """p99 under the target at this offered rate, every answer a success, and the answers
    keeping up with the offer."""
    return (
        sample.requests > 0
        and sample.percentile_ms(0.99) < TARGET_P99_MS
        and sample.errors == 0
        and sample.rps >= 0.95 * rate
    )


def keep_requested(requested: float, _saturation_rps: float) -> float:
    return requested


def probe_rates(saturation_rps: float, rate: float, probes: int) -> list[float]:
    """Rates below saturation (and below `rate`), highest first, in steps of 10/s."""
    top = min(saturation_rps, rate)
    rates: list[float] = []
    for fraction in (0.85, 0.65, 0.45, 0.3, 0.2)[:probes]:
        r = max(10.0, math.floor(top * fraction / 10) * 10)
        if r not in rates:
            rates.append(r)
    return rates


async def measure_probe(target: Target, options: Options, rate: float, duration_s: float) -> Sample:
    sender = SENDERS[options.client](target.server.port, target.headers, 256, target.signer)
    try:
        sample = await measure_fixed_rate(
            sender,
            target.path,
            target.bodies,
            CpuMeter(target.server.process_group),
            rate=rate,
            duration_s=duration_s,
        )
    finally:
        await sender.aclose()
    # measure_fixed_rate's Sample counts anything but 201 as an error; here 200 is success.
    sample.expected = target.result.fixed.expected
    return sample


# A signed delivery with nothing in it: SHVYA answers it without touching the database, but
# only once a thread of its pool is free, so it comes back late while a backlog is queued.
EMPTY_DELIVERY = b'{"object":"whatsapp_business_account","entry":[]}'
# A server that has not worked off its backlog this long after the client gave up on its last
# request (30 s) is stuck, not slow: it is restarted, and the restart reported.
DRAIN_TIMEOUT_S = 15.0


def wait_until_drained(target: Target, *, timeout_s: float = DRAIN_TIMEOUT_S) -> tuple[float, bool]:
    """Seconds until the server answers an empty delivery within 0.25 s, and whether it did.

    The client gives up on a request after 30 s, but the server still works through every
    request it accepted; an overloaded turn would otherwise run into the next measurement.
    """
    assert target.signer is not None
    request = urllib.request.Request(
        f"http://{ingest.HOST}:{target.server.port}{WEBHOOK_PATH}",
        data=EMPTY_DELIVERY,
        headers={"Content-Type": "application/json", **target.signer(EMPTY_DELIVERY)},
        method="POST",
    )
    started = time.perf_counter()
    while (waited := time.perf_counter() - started) < timeout_s:
        sent = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=5):  # a 200 (errors raise)
                if time.perf_counter() - sent < 0.25:
                    return waited, True
        except urllib.error.HTTPError as exc:  # a 4xx would never change: stop here
            if exc.code < 500:
                message = f"{target.name}: an empty delivery was answered {exc.code}"
                raise RuntimeError(message) from exc
        except (urllib.error.URLError, OSError):
            pass  # timed out: still busy
        time.sleep(0.2)
    return waited, False


class ServerSlot:
    """A uvicorn server that can be stopped and started again on the same store."""

    def __init__(self, app: str, *, workers: int, env: dict[str, str], workdir: Path, label: str):
        self._start = lambda: uvicorn_server(
            app, workers=workers, env=env, workdir=workdir, label=label
        )
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(self._start())

    def restart(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(self._start())

    def close(self) -> None:
        self._stack.close()


def run_database(
    runner: asyncio.Runner,
    name: str,
    version: str,
    url: str,
    *,
    workers: int,
    options: Options,
    args: argparse.Namespace,
    phones: PhoneNumbers,
    workdir: Path,
) -> list[Row]:
    print(f"\n{name} {version}, {workers} server process(es):", flush=True)
    started = time.perf_counter()
    meta = FakeMetaGraph(app_secret=APP_SECRET, phone_number_id=PHONE_NUMBER_ID, waba_id=WABA_ID)
    outbound = prepare_store(url, phones, outbound=args.outbound)
    print(
        f"  store ready in {time.perf_counter() - started:.1f} s: a company, its number "
        f"{PHONE_NUMBER_ID}, {len(outbound)} outbound messages to {SEED_LEADS} leads",
        flush=True,
    )
    anchor_env = {
        anchor_app.DATABASE_URL_ENV: url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])),
    }
    shvya_env = {
        "SHVYA_LOG_LEVEL": "warning",
        "SHVYA_JOB_ENGINE": "embedded",
        "SHVYA_SERVE_WORKER": "false",
        "DATABASE_URL": url,
        "META_APP_SECRET": APP_SECRET,
    }
    with contextlib.ExitStack() as stack:
        anchor = stack.enter_context(
            uvicorn_server(
                "anchor_app:app_from_environment",
                workers=workers,
                env=anchor_env,
                workdir=workdir,
                label=f"anchor-{name}",
            )
        )
        # A server per SHVYA target: one that an overload leaves stuck cannot hold up the other.
        slots: dict[str, ServerSlot] = {}
        for label, tag in ((SHVYA_NEW, "new"), (SHVYA_MIX, "mix")):
            slots[label] = ServerSlot(
                "shvya.app:app_from_environment",
                workers=workers,
                env=shvya_env,
                workdir=workdir,
                label=f"shvya-{tag}-{name}",
            )
            stack.callback(slots[label].close)
        signer = signer_for(APP_SECRET)
        meta_headers = {"User-Agent": "facebookexternalua"}

        def settle(target: Target, row: Row) -> None:
            """Wait for the server to work off its backlog; restart it if it is stuck."""
            waited, drained = wait_until_drained(target)
            row.drained_s += waited
            if not drained:
                row.restarts += 1
                print(
                    f"\n  {target.name}: no answer {DRAIN_TIMEOUT_S:g} s after its turn "
                    "(stuck): server restarted",
                    flush=True,
                )
                slots[target.name].restart()
                target.server = slots[target.name].server

        def webhook_target(label: str, bodies: Deliveries) -> Target:
            return Target(
                name=label,
                server=slots[label].server,
                path=WEBHOOK_PATH,
                headers=meta_headers,
                bodies=bodies,
                result=Result(
                    name,
                    label,
                    workers,
                    saturation=Sample(expected="200"),
                    fixed=Sample(expected="200"),
                ),
                signer=signer,
            )

        new = Deliveries(meta, phones, f"{name}-new")
        mix = Deliveries(meta, phones, f"{name}-mix", mix=True, outbound=outbound)
        targets = [
            Target(
                name=ANCHOR_ONE,
                server=anchor,
                path="/one-insert",
                headers={},
                bodies=InboundBodies(phones, tag=f"{name}-anchor"),
                result=Result(name, ANCHOR_ONE, workers),
            ),
            webhook_target(SHVYA_NEW, new),
            webhook_target(SHVYA_MIX, mix),
        ]
        if not args.no_wait:
            # Other test runs share these 2 cores; their load would count against SHVYA.
            wait_for_quiet_machine()
        print(f"  load average at start: {load_average()}", flush=True)
        rows = [Row(target.result) for target in targets]
        for round_number in range(options.rounds):
            print(f"  round {round_number + 1}/{options.rounds}:", end="", flush=True)
            for target, row in zip(targets, rows, strict=True):
                warmup_s = options.warmup_s if round_number == 0 else min(options.warmup_s, 0.5)
                runner.run(
                    measure_round(target, options, warmup_s=warmup_s, choose_rate=keep_requested)
                )
                if target.signer is not None:
                    settle(target, row)
                print(".", end="", flush=True)
            print()
        for target, row in zip(targets, rows, strict=True):
            r = row.result
            ok = "200" if target.signer is not None else "201"
            print(
                f"  {r.target}: {r.saturation.rps:.1f} req/s at saturation; at {r.fixed_rate:g}/s "
                f"p50 {r.fixed.percentile_ms(0.5):.1f} ms, p99 {r.fixed.percentile_ms(0.99):.1f} "
                f"ms; {format_errors(r.saturation.outcomes, r.fixed.outcomes, ok=ok)}"
                + (
                    f"; afterwards busy {row.drained_s:.1f} s with requests the client had "
                    "given up on"
                    if row.drained_s >= 1
                    else ""
                )
                + (f"; restarted {row.restarts} time(s) (stuck)" if row.restarts else ""),
                flush=True,
            )
            if target.signer is None or meets_target(r.fixed, options.rate):
                continue
            for rate in probe_rates(r.saturation.rps, options.rate, args.probes):
                time.sleep(0.5)
                sample = runner.run(measure_probe(target, options, rate, args.probe_duration))
                probe = Probe(rate, sample)
                row.probes.append(probe)
                settle(target, row)
                print(
                    f"    probe at {rate:g}/s: p50 {sample.percentile_ms(0.5):.1f} ms, p99 "
                    f"{sample.percentile_ms(0.99):.1f} ms, answered {sample.rps:.0f}/s, "
                    f"{format_errors(sample.outcomes, ok='200')}"
                    + (" -> sustained" if probe.sustained else ""),
                    flush=True,
                )
                if probe.sustained:
                    break
    for row, bodies in ((rows[1], new), (rows[2], mix)):
        errors = (
            row.result.saturation.errors
            + row.result.fixed.errors
            + sum(p.sample.errors for p in row.probes)
        )
        row.check_ok, row.check = check_store(url, bodies, errors=errors)
        print(f"  {row.result.target}: {row.check}", flush=True)
    print(f"  {name} took {time.perf_counter() - started:.0f} s", flush=True)
    return rows


# --- report ------------------------------------------------------------------------------------


def fmt_ms(sample: Sample, fraction: float) -> str:
    return f"{sample.percentile_ms(fraction):.1f}"


def report(rows: list[Row], options: Options) -> str:
    results = [row.result for row in rows]
    lines = [
        "| database | target | workers | req/s at saturation | p50 ms | p99 ms "
        "| server CPU ms/req | offered req/s | answered req/s | p50 ms | p99 ms | errors "
        "| highest probed rate with p99 < 50 ms (p50 / p99 ms) | of 1-insert anchor |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        r = row.result
        share = ratio(results, r.database, r.target)
        sustained = row.sustained
        if sustained is not None:
            probed = (
                f"{sustained.rate:g} ({fmt_ms(sustained.sample, 0.5)} / "
                f"{fmt_ms(sustained.sample, 0.99)})"
            )
        elif row.probes:
            probed = f"none of {', '.join(f'{p.rate:g}' for p in row.probes)}"
        else:
            probed = "-" if r.target == ANCHOR_ONE else "(met at the offered rate)"
        errors = r.saturation.errors + r.fixed.errors + sum(p.sample.errors for p in row.probes)
        lines.append(
            f"| {r.database} | {r.target} | {r.workers} | {r.saturation.rps:.0f} "
            f"| {fmt_ms(r.saturation, 0.5)} | {fmt_ms(r.saturation, 0.99)} "
            f"| {r.saturation.server_cpu_ms_per_request:.2f} "
            f"| {r.fixed_rate:g} | {r.fixed.rps:.0f} "
            f"| {fmt_ms(r.fixed, 0.5)} | {fmt_ms(r.fixed, 0.99)} | {errors} | {probed} "
            f"| {'' if share is None else f'{share:.0%}'} |"
        )
    lines.append("")
    for row in rows:
        r = row.result
        if r.target == ANCHOR_ONE:
            continue
        verdict = (
            f"p99 {fmt_ms(r.fixed, 0.99)} ms at {r.fixed_rate:g} offered, "
            f"{r.fixed.rps:.0f} answered per second"
        )
        if r.database == "PostgreSQL" and r.workers == TARGET_WORKERS and r.target == SHVYA_NEW:
            met = (
                "met"
                if r.fixed_rate == TARGET_RATE and meets_target(r.fixed, r.fixed_rate)
                else "NOT met"
            )
            verdict += (
                f" (target: p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:g}/s with "
                f"{TARGET_WORKERS} workers: **{met}**)"
            )
        if row.sustained is not None:
            verdict += (
                f"; sustains {row.sustained.rate:g}/s with p99 {fmt_ms(row.sustained.sample, 0.99)}"
                " ms"
            )
        elif row.probes:
            verdict += "; no probed rate reached p99 < 50 ms"
        if row.restarts:
            verdict += f"; stuck {row.restarts} time(s) after an overload (server restarted)"
        lines.append(f"- {r.database}, {r.target}: {verdict}")
    lines.append("")
    for row in rows:
        r = row.result
        sat, fixed = r.saturation, r.fixed
        ok = sat.expected
        outcomes = [sat.outcomes, fixed.outcomes, *(p.sample.outcomes for p in row.probes)]
        lines.append(
            f"- {r.database} {r.target}: {format_errors(*outcomes, ok=ok)}; "
            f"{sat.requests} requests at saturation, {fixed.requests} at {r.fixed_rate:g} req/s"
            + (f", {sum(p.sample.requests for p in row.probes)} in probes" if row.probes else "")
            + f"; during saturation the client used {sat.client_cpu_percent:.0f}% of a core "
            f"and the machine was {sat.machine_busy_percent:.0f}% busy, "
            f"{fixed.machine_busy_percent:.0f}% at the fixed load"
            + (f"; {r.resent} requests resent on a new connection" if r.resent else "")
            + (
                f"; after its turns the server was busy {row.drained_s:.1f} s more with "
                "requests the client had given up on (30 s timeout)"
                if row.drained_s >= 1
                else ""
            )
            + (
                f"; **stuck {row.restarts} time(s)**: no answer {DRAIN_TIMEOUT_S:g} s after its "
                "turn, so its server was restarted"
                if row.restarts
                else ""
            )
            + (f"; {row.check}" if row.check else "")
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (~2 min): shorter windows, one round, one probe, 300 outbound messages",
    )
    parser.add_argument("--duration", type=float, help="seconds at saturation [10; quick: 2]")
    parser.add_argument("--warmup", type=float, help="seconds before measuring [2; quick: 0.5]")
    parser.add_argument(
        "--fixed-duration", type=float, default=None, help="seconds at --rate [--duration]"
    )
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="fixed offered load, deliveries/s"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="connections at saturation")
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds the durations are split into [2; quick: 1]"
    )
    parser.add_argument(
        "--probes", type=int, help="lower rates tried when --rate misses the target [3; quick: 1]"
    )
    parser.add_argument("--probe-duration", type=float, help="seconds per probe [4; quick: 2]")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn processes on PostgreSQL")
    parser.add_argument("--sqlite-workers", type=int, default=1, help="uvicorn processes on SQLite")
    parser.add_argument(
        "--outbound", type=int, help="outbound messages seeded for the statuses [3000; quick: 300]"
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="measure at once, without waiting (up to 2 min) for a quiet machine",
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
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def reproduce_command(args: argparse.Namespace, options: Options) -> str:
    parts = [
        f"--duration={options.duration_s:g}",
        f"--warmup={options.warmup_s:g}",
        f"--fixed-duration={options.fixed_duration_s:g}",
        f"--rate={options.rate:g}",
        f"--concurrency={options.concurrency}",
        f"--rounds={options.rounds}",
        f"--probes={args.probes}",
        f"--probe-duration={args.probe_duration:g}",
        f"--workers={args.workers}",
        f"--sqlite-workers={args.sqlite_workers}",
        f"--outbound={args.outbound}",
        f"--client={options.client}",
    ]
    if args.no_wait:
        parts.append("--no-wait")
    if args.only:
        parts.append(f"--only={args.only}")
    return script_command(__file__, parts, args.postgres_url)


def code_measured() -> str:
    """Which SHVYA the servers import (they inherit PYTHONPATH), and the repository's state."""
    location = Path(shvya.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"shvya from {location}"
    state = "src/ has uncommitted changes" if dirty else "src/ clean"
    return f"shvya from {location}; repository at {head}, {state}"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "unknown"


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
    signal.signal(signal.SIGTERM, ingest._raise_interrupt)  # clean up on `kill` as on Ctrl-C
    command = reproduce_command(args, options)
    print(
        f"SHVYA webhook benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, client: {options.client}\n"
        f"code: {code_measured()}\n"
        f"load average (1, 5, 15 min) at start: {load_average()}\n"
        f"reproduce: cd {REPO_DIR} && {command}",
        flush=True,
    )
    warn_if_busy()
    started = time.perf_counter()
    phones = PhoneNumbers()
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="shvya-bench-") as tmp,
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        workdir = Path(tmp)
        common = {"options": options, "args": args, "phones": phones, "workdir": workdir}
        if args.only in (None, "sqlite"):
            with sqlite_stores(workdir, ["webhooks"]) as (version, [url]):
                rows += run_database(
                    runner, "SQLite", version, url, workers=args.sqlite_workers, **common
                )
        if args.only in (None, "postgresql"):
            with postgresql_stores(args.postgres_url, [""], prefix="bench_webhooks") as (
                version,
                [url],
            ):
                rows += run_database(
                    runner, "PostgreSQL", version, url, workers=args.workers, **common
                )
    print(
        f"\n{report(rows, options)}\n\n"
        f"took {time.perf_counter() - started:.0f} s; load average at end: {load_average()}\n"
        f"reproduce: cd {REPO_DIR} && {command}"
    )
    return 0 if all(row.check_ok for row in rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, benchmark schema and files removed", file=sys.stderr)
        sys.exit(130)
