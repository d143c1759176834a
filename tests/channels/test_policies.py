"""The channel rules as pure decisions: no database, no server."""

from __future__ import annotations

from datetime import timedelta

from shvya.channels.policies import (
    Allow,
    ChannelPolicy,
    Defer,
    Refuse,
    Send,
    SendFacts,
    SendKind,
    decide,
    template_verdict,
    verdict,
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
        "marketing_consent": True,
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
    for kind in SendKind:
        if kind is not SendKind.opt_out_confirmation:
            assert verdict(ChannelPolicy(), suppressed, kind) == Refuse(
                "suppressed", "the contact is on the suppression list"
            )
    # The confirmation's kind is the only one past a suppression, and it is not paced. That it
    # goes only once, and only through channels.service.send_opt_out_confirmation, is
    # tests/channels/test_consent.py's.
    just_replied = facts(is_suppressed=True, last_outbound_at=T0 - timedelta(seconds=1))
    assert verdict(ChannelPolicy(), just_replied, SendKind.opt_out_confirmation) == Allow()
    # No content says "I am the confirmation": the same text is refused like any message.
    confirmation = OutboundContent(text="You're unsubscribed.")
    assert isinstance(decide(ChannelPolicy(), suppressed, confirmation), Refuse)


def test_marketing_needs_consent_a_reply_in_the_open_conversation_does_not() -> None:
    """docs/architecture.md rule 9: bump-ups, sequence steps and anything that starts a
    conversation (a template outside the window) need the contact's marketing consent."""
    stopped = facts(marketing_consent=False)
    refused = Refuse(
        "no_marketing_consent",
        "the contact stopped marketing messages (WhatsApp: a user_preferences stop): only "
        "replies inside an open conversation may go until they resume",
    )
    for kind in (SendKind.bumpup, SendKind.sequence_step):
        assert verdict(ChannelPolicy(), stopped, kind) == refused
        assert decide(ChannelPolicy(), stopped, REPLY, kind) == refused
        assert verdict(ChannelPolicy(), facts(), kind) == Allow()
    # Inside the window a reply, a message and a template are service messages.
    assert decide(ChannelPolicy(), stopped, REPLY) == Send(REPLY)
    assert decide(ChannelPolicy(), stopped, OutboundContent(text="hello")) == Send(
        OutboundContent(text="hello")
    )
    assert decide(ChannelPolicy(), stopped, TEMPLATE) == Send(TEMPLATE)
    # Outside it, a template starts a conversation: marketing, whichever kind asked for it.
    late = facts(marketing_consent=False, last_inbound_at=T0 - timedelta(days=3))
    reengage = ChannelPolicy(reengagement_template=TemplateSend(name="we_miss_you"))
    assert decide(reengage, late, TEMPLATE) == refused
    assert decide(reengage, late, REPLY) == refused
    assert verdict(reengage, late, SendKind.reply) == refused
    assert verdict(reengage, late, SendKind.bumpup) == refused
    # A free-form reply with no template to go as is refused for the window, as before.
    window = decide(ChannelPolicy(), late, REPLY)
    assert isinstance(window, Refuse)
    assert window.reason == "outside_24h_window"
    # Suppression says more than a withdrawn consent.
    both = facts(is_suppressed=True, marketing_consent=False)
    assert verdict(ChannelPolicy(), both, SendKind.bumpup) == Refuse(
        "suppressed", "the contact is on the suppression list"
    )
    # Consent given again: the same sends go.
    assert decide(reengage, facts(last_inbound_at=T0 - timedelta(days=3)), REPLY) == Send(
        OutboundContent(template=TemplateSend(name="we_miss_you"))
    )


def test_outside_the_window_a_bumpup_is_the_template_and_a_sequence_step_goes_as_written() -> None:
    late = facts(last_inbound_at=T0 - timedelta(days=3))
    reengage = ChannelPolicy(reengagement_template=TemplateSend(name="we_miss_you"))
    assert verdict(reengage, late, SendKind.bumpup) == Allow(TemplateSend(name="we_miss_you"))
    step = decide(
        reengage, late, OutboundContent(text="Day 3: any questions?"), SendKind.sequence_step
    )
    assert isinstance(step, Refuse)
    assert step.reason == "outside_24h_window"
    assert decide(reengage, late, TEMPLATE, SendKind.sequence_step) == Send(TEMPLATE)


def test_a_marketing_template_needs_consent_inside_the_window_too() -> None:
    stopped = facts(marketing_consent=False)
    refusal = template_verdict(stopped, category="MARKETING")
    assert refusal is not None
    assert refusal.reason == "no_marketing_consent"
    assert template_verdict(stopped, category="marketing") == refusal
    assert template_verdict(stopped, category="UTILITY") is None
    assert template_verdict(stopped, category="") is None
    assert template_verdict(facts(), category="MARKETING") is None


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
