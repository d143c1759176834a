"""SendGrid (v3 Mail Send over httpx) against a local fake of its API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from shvya.channels.adapters import ChannelSendError, FailureKind
from shvya.channels.sendgrid import sendgrid_transport
from shvya.config import Settings
from tests.channels.email_fixtures import UNSUBSCRIBE, outgoing_email
from tests.fakes.sendgrid_api import FakeSendGrid

CONFIG = {"provider": "sendgrid"}
KEY = "SG.fake-key"


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


def _settings(fake: FakeSendGrid) -> Settings:
    return Settings(database_url="sqlite://", sendgrid_base_url=fake.url)


def test_sendgrid_gets_both_parts_the_headers_and_answers_its_message_id(
    fake_sendgrid: FakeSendGrid,
) -> None:
    email = outgoing_email()
    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    result = transport.send_email(email)
    transport.close()

    [accepted] = fake_sendgrid.accepted
    body = accepted.body
    assert result.external_id == accepted.message_id
    assert body["personalizations"] == [{"to": [{"email": "lead@client.test"}]}]
    assert body["from"] == {"email": "sales@example.com", "name": "Acme Sales"}
    assert body["subject"] == "Your quote, Priya"
    assert body["content"] == [
        {"type": "text/plain", "value": email.text},
        {"type": "text/html", "value": email.html},
    ]
    headers = body["headers"]
    assert headers["List-Unsubscribe"] == UNSUBSCRIBE
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["In-Reply-To"] == "<earlier@client.test>"
    assert headers["References"] == "<first@client.test> <earlier@client.test>"
    assert headers["Message-ID"] == "<m-1@shvya.example>"
    assert body["custom_args"] == {"shvya_message_id": "m-1@shvya.example"}
    # SendGrid must not add its own unsubscribe or rewrite SHVYA's signed link.
    assert body["tracking_settings"]["subscription_tracking"] == {"enable": False}
    assert body["tracking_settings"]["click_tracking"]["enable"] is False


def test_a_text_only_email_sends_one_part(fake_sendgrid: FakeSendGrid) -> None:
    from dataclasses import replace

    email = replace(outgoing_email(), html=None)
    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    transport.send_email(email)
    assert fake_sendgrid.accepted[0].body["content"] == [
        {"type": "text/plain", "value": email.text}
    ]


def test_one_connection_serves_many_sends(fake_sendgrid: FakeSendGrid) -> None:
    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    ids = {transport.send_email(outgoing_email()).external_id for _ in range(5)}
    transport.verify()  # type: ignore[attr-defined]
    transport.close()
    assert len(ids) == 5
    assert fake_sendgrid.connections == 1


def test_verify_refuses_an_unknown_key_and_one_without_mail_send(
    fake_sendgrid: FakeSendGrid,
) -> None:
    sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid)).verify()  # type: ignore[attr-defined]
    bad = sendgrid_transport(CONFIG, "SG.wrong", _settings(fake_sendgrid))
    with pytest.raises(ChannelSendError) as refused:
        bad.verify()  # type: ignore[attr-defined]
    assert refused.value.kind is FailureKind.auth
    assert "authorization grant is invalid" in refused.value.message
    with pytest.raises(ChannelSendError) as on_send:
        bad.send_email(outgoing_email())
    assert on_send.value.kind is FailureKind.auth
    assert on_send.value.code == "401"

    fake_sendgrid.scopes = ("scopes.read",)
    with pytest.raises(ChannelSendError) as no_scope:
        sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid)).verify()  # type: ignore[attr-defined]
    assert no_scope.value.kind is FailureKind.auth
    assert "mail.send" in no_scope.value.message
    with pytest.raises(ChannelSendError) as forbidden:
        sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid)).send_email(outgoing_email())
    assert forbidden.value.kind is FailureKind.auth
    assert forbidden.value.code == "403"
    assert fake_sendgrid.accepted == []


def test_a_rate_limited_send_is_retry_at_sendgrids_reset_time(
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.rate_limit = 2
    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    transport.send_email(outgoing_email())
    transport.send_email(outgoing_email())
    with pytest.raises(ChannelSendError) as limited:
        transport.send_email(outgoing_email())
    assert limited.value.kind is FailureKind.retry
    assert limited.value.code == "429"
    reset = int(fake_sendgrid._window_start + fake_sendgrid.window_seconds)
    assert limited.value.retry_at == datetime.fromtimestamp(reset, tz=UTC)
    assert len(fake_sendgrid.accepted) == 2


def test_a_server_error_is_retry(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.server_error_next = 1
    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(outgoing_email())
    assert failed.value.kind is FailureKind.retry
    assert failed.value.retry_at is None
    assert transport.send_email(outgoing_email()).external_id


def test_a_refused_body_is_permanent_with_sendgrids_messages(
    fake_sendgrid: FakeSendGrid,
) -> None:
    from dataclasses import replace

    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(replace(outgoing_email(), subject=""))
    assert failed.value.kind is FailureKind.permanent
    assert failed.value.code == "400"
    assert "subject: The subject is required." in failed.value.message


def test_reserved_headers_are_left_to_sendgrid(fake_sendgrid: FakeSendGrid) -> None:
    from dataclasses import replace

    email = outgoing_email()
    email = replace(email, headers=(*email.headers, ("Reply-To", "someone@example.com")))
    transport = sendgrid_transport(CONFIG, KEY, _settings(fake_sendgrid))
    transport.send_email(email)
    assert "Reply-To" not in fake_sendgrid.accepted[0].body["headers"]


def test_an_unreachable_sendgrid_is_retry() -> None:
    settings = Settings(
        database_url="sqlite://", sendgrid_base_url="http://127.0.0.1:9", email_timeout_seconds=1
    )
    with pytest.raises(ChannelSendError) as failed:
        sendgrid_transport(CONFIG, KEY, settings).send_email(outgoing_email())
    assert failed.value.kind is FailureKind.retry


def test_an_account_without_a_key_is_an_auth_problem() -> None:
    with pytest.raises(ChannelSendError) as failed:
        sendgrid_transport(CONFIG, None, Settings(database_url="sqlite://"))
    assert failed.value.kind is FailureKind.auth


def test_no_answer_after_the_request_went_out_is_unknown_never_resent(
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.delay_seconds = 1.5
    settings = Settings(
        database_url="sqlite://", sendgrid_base_url=fake_sendgrid.url, email_timeout_seconds=0.5
    )
    with pytest.raises(ChannelSendError) as failed:
        sendgrid_transport(CONFIG, KEY, settings).send_email(outgoing_email())
    assert failed.value.kind is FailureKind.unknown
    assert len(fake_sendgrid.accepted) == 1
    assert len(fake_sendgrid.requests) == 1
