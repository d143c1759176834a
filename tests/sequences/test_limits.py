"""Sending limits per mailbox, per number and per recipient domain, counted over rolling
windows on both databases (docs/sequences-ooo-and-limits.md, "Sending limits")."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from shvya.conversations.models import Message, MessageStatus
from shvya.crm import service as crm
from shvya.crm.models import Lead, LeadContact
from shvya.sequences.limits import (
    DEFAULT_LIMITS,
    LimitHold,
    SendingLimits,
    limit_verdict,
    limits_for,
    recipient_domain,
)
from shvya.tenancy.models import ChannelAccount
from tests.support import FakeClock, Tenant

MAILBOX = SendingLimits(per_hour=3, per_day=5, per_domain_per_day=4)


@dataclass
class World:
    factory: sessionmaker[Session]
    clock: FakeClock

    def account(self, company_id: uuid.UUID, channel: str = "email") -> uuid.UUID:
        with self.factory() as session:
            row = ChannelAccount(
                company_id=company_id,
                channel=channel,
                external_id=f"{uuid.uuid4().hex[:8]}@sender.example",
            )
            session.add(row)
            session.commit()
            return row.id

    def sent(
        self,
        company_id: uuid.UUID,
        account_id: uuid.UUID | None,
        *,
        to: str = "a@prospect.example",
        channel: str = "email",
        status: MessageStatus = MessageStatus.sent,
        ago: timedelta = timedelta(0),
        count: int = 1,
    ) -> None:
        """`count` outbound messages created `ago` before the clock's now, one lead each."""
        with self.factory() as session:
            stage = crm.get_entry_stage(session, company_id=company_id, now=self.clock.now())
            for _ in range(count):
                lead = Lead(company_id=company_id, pipeline_id=stage.pipeline_id, stage_id=stage.id)
                session.add(lead)
                session.flush()
                local, _, domain = to.partition("@")
                contact = LeadContact(
                    company_id=company_id,
                    lead_id=lead.id,
                    channel=channel,
                    value=f"{local}.{uuid.uuid4().hex[:6]}@{domain}"
                    if domain
                    else f"{to}{uuid.uuid4().int % 10**6:06d}",
                )
                session.add(contact)
                session.flush()
                at = self.clock.now() - ago
                session.add(
                    Message(
                        company_id=company_id,
                        lead_id=lead.id,
                        contact_id=contact.id,
                        channel=channel,
                        channel_account_id=account_id,
                        direction="out",
                        status=status.value,
                        text="hello",
                        created_at=at,
                        updated_at=at,
                    )
                )
            session.commit()

    def verdict(
        self,
        company_id: uuid.UUID,
        account_id: uuid.UUID | None,
        *,
        to: str = "new@prospect.example",
        channel: str = "email",
        limits: SendingLimits = MAILBOX,
    ) -> LimitHold | None:
        with self.factory() as session:
            return limit_verdict(
                session,
                company_id=company_id,
                channel_account_id=account_id,
                channel=channel,
                recipient=to,
                now=self.clock.now(),
                limits=limits,
            )


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FakeClock) -> World:
    return World(session_factory, clock)


def test_daily_limit_holds_until_the_oldest_send_ages_out(world: World, acme: Tenant) -> None:
    mailbox = world.account(acme.company_id)
    world.sent(acme.company_id, mailbox, ago=timedelta(hours=20), to="x@one.example")
    world.sent(acme.company_id, mailbox, ago=timedelta(hours=10), count=3, to="x@two.example")
    assert world.verdict(acme.company_id, mailbox) is None  # 4 of 5: one below the limit

    world.sent(acme.company_id, mailbox, ago=timedelta(hours=5), to="x@three.example")
    hold = world.verdict(acme.company_id, mailbox)
    assert hold is not None
    assert hold.reason == "mailbox_daily_limit"
    assert "5 messages in the last 24 hours (limit 5)" in hold.detail
    # The send 20 hours ago leaves the rolling window in 4 hours.
    assert hold.until == world.clock.now() + timedelta(hours=4)

    world.clock.advance(hours=4)  # the window rolls: that send is exactly 24 h old
    assert world.verdict(acme.company_id, mailbox) is None


def test_hourly_limit_and_until_when_several_must_age_out(world: World, acme: Tenant) -> None:
    mailbox = world.account(acme.company_id)
    for minutes in (50, 40, 30, 20):
        world.sent(acme.company_id, mailbox, ago=timedelta(minutes=minutes), to=f"p@d{minutes}.ex")
    hold = world.verdict(acme.company_id, mailbox)
    assert hold is not None
    assert hold.reason == "mailbox_hourly_limit"
    # 4 in the hour, limit 3: two must leave, the second leaves 20 minutes from now.
    assert hold.until == world.clock.now() + timedelta(minutes=20)
    world.clock.advance(minutes=19)
    assert world.verdict(acme.company_id, mailbox) is not None
    world.clock.advance(minutes=1)
    assert world.verdict(acme.company_id, mailbox) is None


def test_the_later_hold_wins_when_two_limits_are_reached(world: World, acme: Tenant) -> None:
    mailbox = world.account(acme.company_id)
    world.sent(acme.company_id, mailbox, ago=timedelta(hours=23), count=2, to="p@a.example")
    world.sent(acme.company_id, mailbox, ago=timedelta(minutes=30), count=3, to="p@b.example")
    hold = world.verdict(acme.company_id, mailbox)
    assert hold is not None
    assert hold.reason == "mailbox_daily_limit"  # 1 hour away, after the hourly 30 minutes
    assert hold.until == world.clock.now() + timedelta(hours=1)


def test_other_accounts_other_companies_and_failed_sends_do_not_count(
    world: World, acme: Tenant, globex: Tenant
) -> None:
    mailbox = world.account(acme.company_id)
    other_mailbox = world.account(acme.company_id)
    globex_mailbox = world.account(globex.company_id)
    world.sent(acme.company_id, mailbox, count=2, to="p@a.example")
    world.sent(acme.company_id, other_mailbox, count=5, to="p@b.example")
    world.sent(globex.company_id, globex_mailbox, count=5, to="p@c.example")
    world.sent(acme.company_id, mailbox, count=5, status=MessageStatus.failed, to="p@d.example")
    world.sent(acme.company_id, mailbox, count=5, status=MessageStatus.queued, to="p@e.example")
    world.sent(acme.company_id, mailbox, ago=timedelta(hours=25), count=5, to="p@f.example")
    assert world.verdict(acme.company_id, mailbox) is None
    # Delivered, read and unknown (maybe sent) all count.
    world.sent(acme.company_id, mailbox, status=MessageStatus.unknown, to="p@g.example")
    assert world.verdict(acme.company_id, mailbox) is not None  # 3 in the hour


def test_per_domain_limit_counts_every_mailbox_of_the_company(
    world: World, acme: Tenant, globex: Tenant
) -> None:
    first, second = world.account(acme.company_id), world.account(acme.company_id)
    roomy = SendingLimits(per_hour=100, per_day=100, per_domain_per_day=4)
    world.sent(acme.company_id, first, ago=timedelta(hours=22), to="ana@bigcorp.example")
    world.sent(acme.company_id, first, ago=timedelta(hours=2), to="raj@BigCorp.example".lower())
    world.sent(acme.company_id, second, ago=timedelta(hours=1), count=1, to="li@bigcorp.example")
    # Neither another company's sends nor a look-alike domain count.
    world.sent(globex.company_id, world.account(globex.company_id), to="x@bigcorp.example")
    world.sent(acme.company_id, first, to="x@notbigcorp.example")
    world.sent(acme.company_id, first, to="x@mail.bigcorp.example")
    assert world.verdict(acme.company_id, second, to="New@BigCorp.Example", limits=roomy) is None

    world.sent(acme.company_id, second, to="sam@bigcorp.example")
    hold = world.verdict(acme.company_id, second, to="new@bigcorp.example", limits=roomy)
    assert hold is not None
    assert hold.reason == "domain_daily_limit"
    assert "bigcorp.example" in hold.detail
    assert hold.until == world.clock.now() + timedelta(hours=2)
    # Another domain has room; a shared mailbox provider is exempt.
    assert world.verdict(acme.company_id, second, to="a@other.example", limits=roomy) is None
    world.sent(acme.company_id, first, count=4, to="p@gmail.com")
    assert world.verdict(acme.company_id, first, to="q@gmail.com", limits=roomy) is None


def test_a_number_without_an_account_row_counts_the_companys_sends_on_the_channel(
    world: World, acme: Tenant
) -> None:
    number = SendingLimits(per_hour=2)
    world.sent(acme.company_id, None, channel="wa_web", count=2, to="+919800000001")
    world.sent(acme.company_id, None, channel="sms", count=2, to="+919800000002")
    hold = world.verdict(acme.company_id, None, channel="wa_web", to="+919800000003", limits=number)
    assert hold is not None
    assert hold.reason == "number_hourly_limit"
    assert hold.until == world.clock.now() + timedelta(hours=1)
    # SMS has its own number: its two sends do not count against WhatsApp Web's, nor the
    # reverse (2 of 3).
    assert (
        world.verdict(
            acme.company_id, None, channel="sms", to="+91", limits=SendingLimits(per_hour=3)
        )
        is None
    )


def test_defaults_and_company_overrides() -> None:
    email = DEFAULT_LIMITS["email"]
    assert (email.per_hour, email.per_day, email.per_domain_per_day) == (50, 400, 100)
    assert limits_for("email") == email
    custom = limits_for("email", {"sending_limits": {"email": {"per_day": 1000}}})
    assert (custom.per_hour, custom.per_day) == (50, 1000)
    # An override that does not validate never lifts the limits.
    assert limits_for("email", {"sending_limits": {"email": {"per_day": -1}}}) == email
    assert limits_for("sandbox") == SendingLimits()
    assert recipient_domain(" ana@Example.COM ") == "example.com"
    assert recipient_domain("+919800000000") is None


def test_counted_by_aggregate_queries_not_by_loading_rows(
    world: World, acme: Tenant, engine: Engine
) -> None:
    mailbox = world.account(acme.company_id)
    world.sent(acme.company_id, mailbox, count=6, to="p@bigcorp.example")
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        hold = world.verdict(acme.company_id, mailbox, to="q@bigcorp.example")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert hold is not None
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # One count of both windows, one row for each of the two limits reached (day, hour),
    # one count and one row for the domain: never the rows of the window.
    assert len(selects) == 5
    assert all("count(" in s.lower() or "LIMIT" in s.upper() for s in selects)
