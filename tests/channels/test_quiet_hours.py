"""Quiet hours (docs/quiet-hours.md): email and SMS wait for the lead's morning, in the lead's
own time zone, and a bump-up never goes by email."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shvya.channels.policies import (
    Allow,
    ChannelPolicy,
    Defer,
    Refuse,
    SendFacts,
    SendKind,
    verdict,
)
from shvya.channels.quiet_hours import QuietWindow, lead_zone, phone_zone
from shvya.crm.models import Channel
from tests.support import Tenant


def facts(**overrides: Any) -> SendFacts:
    values: dict[str, Any] = {
        "channel": Channel.email,
        "now": datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        "is_suppressed": False,
        "last_inbound_at": None,
        "last_outbound_at": None,
        "sent_last_second": 0,
        "marketing_consent": True,
        "lead_timezone": "UTC",
    }
    values.update(overrides)
    return SendFacts(**values)


def ask(kind: SendKind = SendKind.sequence_step, policy: ChannelPolicy | None = None, **f: Any):  # type: ignore[no-untyped-def]
    return verdict(policy or ChannelPolicy(), facts(**f), kind)


def test_the_same_job_goes_to_kolkata_and_waits_for_new_yorks_morning() -> None:
    # 14:00 UTC: 19:30 in Kolkata, 09:00 in New York; 03:00 UTC: 08:30 and 22:00 (EST).
    afternoon = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    assert ask(now=afternoon, lead_timezone="Asia/Kolkata") == Allow()
    assert ask(now=afternoon, lead_timezone="America/New_York") == Allow()

    night = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    assert ask(now=night, lead_timezone="Asia/Kolkata") == Allow()
    waits = ask(now=night, lead_timezone="America/New_York")
    assert isinstance(waits, Defer)
    # 08:00 EST on the 27th is 13:00 UTC.
    assert waits.until == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    assert waits.reason.startswith("quiet_hours:")
    assert "America/New_York" in waits.reason and "now 22:00" in waits.reason

    # The reverse: 18:00 UTC is 23:30 in Kolkata (waits for 08:00 IST = 02:30 UTC) and
    # 13:00 in New York (goes).
    evening = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
    assert ask(now=evening, lead_timezone="America/New_York") == Allow()
    kolkata = ask(now=evening, lead_timezone="Asia/Kolkata")
    assert isinstance(kolkata, Defer)
    assert kolkata.until == datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
    assert "Asia/Kolkata, now 23:30" in kolkata.reason


def test_sms_stops_at_21_and_email_at_22_by_default() -> None:
    at_2130 = datetime(2026, 11, 26, 21, 30, tzinfo=UTC)
    assert ask(now=at_2130) == Allow()
    sms = ask(now=at_2130, channel=Channel.sms)
    assert isinstance(sms, Defer)
    assert sms.until == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    # The window's last minute goes, its end does not; 08:00 sharp goes.
    assert ask(now=datetime(2026, 11, 26, 21, 59, 59, tzinfo=UTC)) == Allow()
    assert isinstance(ask(now=datetime(2026, 11, 26, 22, 0, tzinfo=UTC)), Defer)
    assert ask(now=datetime(2026, 11, 26, 8, 0, tzinfo=UTC)) == Allow()


def test_the_next_allowed_minute_is_right_across_dst_changes_in_new_york() -> None:
    zone = "America/New_York"
    # Saturday 7 March 2026, 23:00 EST (04:00 UTC on the 8th); clocks spring forward at
    # 02:00 on Sunday: 08:00 EDT is 12:00 UTC, not 13:00.
    spring = ask(now=datetime(2026, 3, 8, 4, 0, tzinfo=UTC), lead_timezone=zone)
    assert isinstance(spring, Defer)
    assert spring.until == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    # Saturday 31 October 2026, 23:00 EDT (03:00 UTC on 1 November); clocks fall back at
    # 02:00 on Sunday: 08:00 EST is 13:00 UTC.
    autumn = ask(now=datetime(2026, 11, 1, 3, 0, tzinfo=UTC), lead_timezone=zone)
    assert isinstance(autumn, Defer)
    assert autumn.until == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    # A window that opens inside the skipped hour opens when the clock jumps (03:00 EDT).
    early = ChannelPolicy(quiet_hours={Channel.email: QuietWindow(time(2, 30), time(5))})
    skipped = ask(policy=early, now=datetime(2026, 3, 8, 5, 0, tzinfo=UTC), lead_timezone=zone)
    assert isinstance(skipped, Defer)
    assert skipped.until == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_an_overnight_window_sends_at_night_and_waits_by_day() -> None:
    night_shift = ChannelPolicy(
        quiet_hours={
            Channel.email: QuietWindow(time(22), time(6)),
            Channel.sms: QuietWindow(time(8), time(21)),
        }
    )
    assert ask(policy=night_shift, now=datetime(2026, 11, 26, 23, 0, tzinfo=UTC)) == Allow()
    assert ask(policy=night_shift, now=datetime(2026, 11, 27, 5, 59, tzinfo=UTC)) == Allow()
    day = ask(policy=night_shift, now=datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    assert isinstance(day, Defer)
    assert day.until == datetime(2026, 11, 26, 22, 0, tzinfo=UTC)


def test_whatsapp_and_the_opt_out_confirmation_are_not_held() -> None:
    night = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    whatsapp = facts(
        channel=Channel.wa_cloud, now=night, last_inbound_at=night - timedelta(hours=1)
    )
    assert verdict(ChannelPolicy(), whatsapp, SendKind.reply) == Allow()
    assert ask(SendKind.opt_out_confirmation, now=night, channel=Channel.sms) == Allow()


def test_an_sms_answer_to_a_lead_who_just_wrote_is_not_held_an_email_or_a_bumpup_is() -> None:
    night = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    just_wrote = night - timedelta(minutes=10)
    assert ask(SendKind.reply, now=night, channel=Channel.sms, last_inbound_at=just_wrote) == (
        Allow()
    )
    assert ask(SendKind.message, now=night, channel=Channel.sms, last_inbound_at=just_wrote) == (
        Allow()
    )
    # A marketing send is not an answer; an hour-old message is no live conversation; email
    # is for scheduled work.
    assert isinstance(
        ask(SendKind.bumpup, now=night, channel=Channel.sms, last_inbound_at=just_wrote), Defer
    )
    an_hour_ago = night - timedelta(hours=1)
    assert isinstance(
        ask(SendKind.reply, now=night, channel=Channel.sms, last_inbound_at=an_hour_ago), Defer
    )
    assert isinstance(ask(SendKind.message, now=night, last_inbound_at=just_wrote), Defer)


def test_a_bumpup_never_goes_by_email() -> None:
    refused = ask(SendKind.bumpup)
    assert isinstance(refused, Refuse)
    assert refused.reason == "email_not_for_bumpups"
    assert "never goes by email" in refused.detail
    # A sequence step by email is what email is for.
    assert ask(SendKind.sequence_step) == Allow()


def test_the_leads_zone_is_theirs_else_their_numbers_else_the_companys() -> None:
    assert phone_zone("+919812345678") == "Asia/Kolkata"
    assert phone_zone("+12125550123") == "America/New_York"
    assert phone_zone("+447700900123") is None or phone_zone("+447700900123") == "Europe/London"
    assert lead_zone("Europe/Madrid", ["+919812345678"], "UTC") == "Europe/Madrid"
    assert lead_zone("Not/AZone", ["+919812345678"], "UTC") == "Asia/Kolkata"
    assert lead_zone(None, ["+12125550123"], "Asia/Kolkata") == "America/New_York"
    # +1 alone spans a continent: no one zone, so the company's.
    assert lead_zone(None, ["+18885550123"], "Europe/Berlin") == "Europe/Berlin"
    assert lead_zone(None, [], "Asia/Kolkata") == "Asia/Kolkata"


def test_company_settings_set_the_windows() -> None:
    policy = ChannelPolicy.from_settings(
        {"channels": {"quiet_hours": {"sms": {"start": "09:30", "end": "20:00"}}}}
    )
    assert policy.quiet_hours[Channel.sms] == QuietWindow(time(9, 30), time(20))
    assert policy.quiet_hours[Channel.email] == QuietWindow(time(8), time(22))


# --- the API ----------------------------------------------------------------------------------


def test_admins_read_and_change_quiet_hours_with_clear_errors(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    shown = client.get("/channels/quiet-hours", headers=acme.admin)
    assert shown.status_code == 200, shown.text
    assert shown.json() == {
        "email": {"start": "08:00", "end": "22:00"},
        "sms": {"start": "08:00", "end": "21:00"},
    }
    changed = client.patch(
        "/channels/quiet-hours",
        json={
            "sms": {"start": "09:00", "end": "20:30"},
            "email": {"start": "22:00", "end": "06:00"},
        },
        headers=acme.admin,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "email": {"start": "22:00", "end": "06:00"},
        "sms": {"start": "09:00", "end": "20:30"},
    }
    # Another company's windows are its own; agents may not change them.
    assert client.get("/channels/quiet-hours", headers=globex.admin).json()["sms"] == {
        "start": "08:00",
        "end": "21:00",
    }
    assert (
        client.patch("/channels/quiet-hours", json={"sms": None}, headers=acme.agent).status_code
        == 403
    )

    for body, field, says in [
        ({"sms": {"start": "8:00", "end": "21:00"}}, "sms.start", "HH:MM"),
        ({"sms": {"start": "08:00", "end": "24:00"}}, "sms.end", "HH:MM"),
        ({"email": {"start": "09:00", "end": "09:00"}}, "email", "equal"),
        ({"whatsapp": {"start": "09:00", "end": "10:00"}}, "whatsapp", ""),
        ({"sms": "all day"}, "sms", ""),
    ]:
        refused = client.patch("/channels/quiet-hours", json=body, headers=acme.admin)
        assert refused.status_code == 422, body
        answer = refused.json()
        assert says in answer["detail"], answer
        assert answer["detail"].startswith(f"{field}:") or any(
            e["field"] == field for e in answer.get("errors", [])
        ), answer
    # Nothing of a refused change was kept; null restores a default.
    restored = client.patch("/channels/quiet-hours", json={"email": None}, headers=acme.admin)
    assert restored.json() == {
        "email": {"start": "08:00", "end": "22:00"},
        "sms": {"start": "09:00", "end": "20:30"},
    }


def test_the_router_reads_the_leads_zone_from_the_lead_the_number_or_the_company(
    client: TestClient, acme: Tenant, session_factory: sessionmaker[Session]
) -> None:
    from shvya.channels import service
    from shvya.crm import service as crm
    from shvya.tenancy import service as tenancy

    def lead(contacts: list[dict[str, str]]) -> str:
        made = client.post(
            "/leads", json={"name": "Ravi", "contacts": contacts}, headers=acme.admin
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def zone_of(lead_id: str, channel: Channel) -> str:
        import uuid

        with session_factory.begin() as session:
            company = tenancy.get_company(session, company_id=acme.company_id)
            contact = crm.lead_contact(
                session,
                company_id=acme.company_id,
                lead_id=uuid.UUID(lead_id),
                channel=channel.value,
            )
            assert contact is not None
            route = service.Route(
                company=company,
                contact=contact,
                adapter=service.SandboxAdapter(),
                account=None,
                policy=ChannelPolicy.from_settings(company.settings),
            )
            return service._lead_zone(session, route, lead_id=uuid.UUID(lead_id))

    indian = lead(
        [
            {"channel": "email", "value": "ravi@example.com"},
            {"channel": "sms", "value": "+919812345678"},
        ]
    )
    assert zone_of(indian, Channel.email) == "Asia/Kolkata"
    new_yorker = lead([{"channel": "sms", "value": "+12125550123"}])
    assert zone_of(new_yorker, Channel.sms) == "America/New_York"
    email_only = lead([{"channel": "email", "value": "ana@example.com"}])
    with session_factory.begin() as session:
        company_zone = tenancy.get_company(session, company_id=acme.company_id).timezone
    assert zone_of(email_only, Channel.email) == company_zone
    with session_factory.begin() as session:
        import uuid

        crm.get_lead(
            session, company_id=acme.company_id, lead_id=uuid.UUID(email_only)
        ).timezone = "Europe/Madrid"
    assert zone_of(email_only, Channel.email) == "Europe/Madrid"
