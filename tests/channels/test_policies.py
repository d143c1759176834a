"""The channel rules as pure decisions: no database, no server."""

from __future__ import annotations

from datetime import timedelta

from shvya.channels.policies import (
    ChannelPolicy,
    Defer,
    Refuse,
    Send,
    SendFacts,
    decide,
)
from shvya.channels.schemas import OutboundContent, TemplateSend
from shvya.crm.models import Channel
from tests.support import T0

REPLY = OutboundContent(text="The premium plan is 4,999 INR a month.", reengage_with_template=True)
TEMPLATE = OutboundContent(template=TemplateSend(name="followup", body_params=["Ana"]))


def facts(**overrides: object) -> SendFacts:
    values: dict[str, object] = {
        "channel": Channel.wa_cloud,
        "now": T0,
        "is_suppressed": False,
        "last_inbound_at": T0 - timedelta(hours=1),
        "last_outbound_at": None,
        "sent_last_second": 0,
    }
    values.update(overrides)
    return SendFacts(**values)  # type: ignore[arg-type]


def test_inside_the_window_a_reply_goes_out() -> None:
    assert decide(ChannelPolicy(), facts(), REPLY) == Send(REPLY)


def test_the_window_runs_from_the_leads_last_message_not_from_ours() -> None:
    edge = facts(last_inbound_at=T0 - timedelta(hours=24), last_outbound_at=T0 - timedelta(hours=1))
    decision = decide(ChannelPolicy(), edge, REPLY)
    assert isinstance(decision, Refuse)
    assert decision.reason == "outside_24h_window"
    assert isinstance(decide(ChannelPolicy(), facts(last_inbound_at=None), REPLY), Refuse)
    just_inside = facts(last_inbound_at=T0 - timedelta(hours=23, minutes=59))
    assert decide(ChannelPolicy(), just_inside, REPLY) == Send(REPLY)


def test_outside_the_window_a_template_goes_and_a_reply_becomes_the_reengagement_template() -> None:
    late = facts(last_inbound_at=T0 - timedelta(days=3))
    assert decide(ChannelPolicy(), late, TEMPLATE) == Send(TEMPLATE)
    reengage = TemplateSend(name="we_miss_you", body_params=[])
    decision = decide(ChannelPolicy(reengagement_template=reengage), late, REPLY)
    assert decision == Send(OutboundContent(template=reengage))
    # a message that did not ask for re-engagement is still refused
    plain = OutboundContent(text="hello")
    assert isinstance(decide(ChannelPolicy(reengagement_template=reengage), late, plain), Refuse)


def test_sandbox_has_no_window_and_no_pacing() -> None:
    sandbox = facts(channel=Channel.sandbox, last_inbound_at=None)
    assert decide(ChannelPolicy(), sandbox, REPLY) == Send(REPLY)
    right_after = facts(channel=Channel.sandbox, last_outbound_at=T0 - timedelta(seconds=1))
    assert decide(ChannelPolicy(), right_after, REPLY) == Send(REPLY)


def test_suppressed_contacts_get_nothing_but_one_opt_out_confirmation() -> None:
    suppressed = facts(is_suppressed=True)
    refusal = decide(ChannelPolicy(), suppressed, TEMPLATE)
    assert isinstance(refusal, Refuse)
    assert refusal.reason == "suppressed"
    confirmation = OutboundContent(text="You're unsubscribed.", is_opt_out_confirmation=True)
    assert decide(ChannelPolicy(), suppressed, confirmation) == Send(confirmation)
    again = facts(is_suppressed=True, confirmation_already_sent=True)
    assert isinstance(decide(ChannelPolicy(), again, confirmation), Refuse)


def test_pacing_defers_until_the_gap_has_passed() -> None:
    decision = decide(ChannelPolicy(), facts(last_outbound_at=T0 - timedelta(seconds=5)), REPLY)
    assert decision == Defer(T0 + timedelta(seconds=10), "at most one message per 15 s")
    gap_over = facts(last_outbound_at=T0 - timedelta(seconds=15))
    assert decide(ChannelPolicy(), gap_over, REPLY) == Send(REPLY)
    custom = ChannelPolicy.from_settings({"channels": {"min_gap_seconds": 60}})
    assert isinstance(
        decide(custom, facts(last_outbound_at=T0 - timedelta(seconds=30)), REPLY), Defer
    )


def test_number_throughput_defers_by_a_second_instead_of_sleeping() -> None:
    busy = facts(sent_last_second=80)
    assert decide(ChannelPolicy(), busy, REPLY) == Defer(
        T0 + timedelta(seconds=1), "number throughput (80/s) reached"
    )
    assert decide(ChannelPolicy(), facts(sent_last_second=79), REPLY) == Send(REPLY)


def test_company_settings_configure_the_policy() -> None:
    policy = ChannelPolicy.from_settings(
        {
            "channels": {
                "min_gap_seconds": 30,
                "throughput_per_second": 20,
                "reengagement_template": {"name": "reopen", "language": "en_US"},
            }
        }
    )
    assert policy.min_gap_seconds == 30
    assert policy.throughput_per_second == 20
    assert policy.reengagement_template == TemplateSend(name="reopen", language="en_US")
    assert ChannelPolicy.from_settings({}) == ChannelPolicy()
