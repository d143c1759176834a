"""Amazon SES (SESv2 SendEmail, raw content) against a local fake of its REST-JSON API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shvya.channels.adapters import ChannelSendError, FailureKind
from shvya.channels.ses import ses_transport
from shvya.config import Settings
from tests.channels.email_fixtures import outgoing_email
from tests.fakes.ses_api import FakeSes

CONFIG = {"provider": "ses", "region": "eu-west-1", "access_key_id": "AKIAFAKE"}


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    with FakeSes() as fake:
        yield fake


def _settings(fake: FakeSes, **extra: object) -> Settings:
    return Settings(database_url="sqlite://", ses_endpoint_url=fake.url, **extra)  # type: ignore[arg-type]


def test_the_signed_bytes_reach_ses_unchanged_and_its_message_id_comes_back(
    fake_ses: FakeSes,
) -> None:
    email = outgoing_email()
    transport = ses_transport(
        {**CONFIG, "configuration_set": "shvya-events"}, "secret", _settings(fake_ses)
    )
    result = transport.send_email(email)
    transport.close()

    assert len(fake_ses.sent) == 1
    sent = fake_ses.sent[0]
    assert sent.raw == email.raw
    assert sent.raw.startswith(b"DKIM-Signature:")
    assert sent.configuration_set == "shvya-events"
    assert sent.destination == {"ToAddresses": ["lead@client.test"]}
    assert result.external_id == sent.message_id


def test_one_client_and_one_connection_serve_many_sends(fake_ses: FakeSes) -> None:
    transport = ses_transport(CONFIG, "secret", _settings(fake_ses))
    ids = {transport.send_email(outgoing_email()).external_id for _ in range(5)}
    transport.close()
    assert len(ids) == 5
    assert fake_ses.connections == 1


def test_verify_accepts_good_credentials_and_refuses_unknown_ones(fake_ses: FakeSes) -> None:
    good = ses_transport(CONFIG, "secret", _settings(fake_ses))
    good.verify()  # type: ignore[attr-defined]
    bad = ses_transport({**CONFIG, "access_key_id": "AKIAWRONG"}, "secret", _settings(fake_ses))
    with pytest.raises(ChannelSendError) as refused:
        bad.verify()  # type: ignore[attr-defined]
    assert refused.value.kind is FailureKind.auth
    assert refused.value.code == "UnrecognizedClientException"
    with pytest.raises(ChannelSendError) as on_send:
        bad.send_email(outgoing_email())
    assert on_send.value.kind is FailureKind.auth
    assert fake_ses.sent == []


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("TooManyRequestsException", 429, FailureKind.retry),
        ("LimitExceededException", 400, FailureKind.retry),
        ("InternalFailure", 500, FailureKind.retry),
        ("ServiceUnavailable", 503, FailureKind.retry),
        ("MessageRejected", 400, FailureKind.permanent),
        ("MailFromDomainNotVerifiedException", 400, FailureKind.permanent),
        ("BadRequestException", 400, FailureKind.permanent),
        ("AccountSuspendedException", 400, FailureKind.channel_blocked),
        ("SendingPausedException", 400, FailureKind.channel_blocked),
        ("InvalidSignatureException", 403, FailureKind.auth),
        ("SignatureDoesNotMatch", 403, FailureKind.auth),
    ],
)
def test_each_ses_error_maps_to_what_the_router_does_next(
    fake_ses: FakeSes, code: str, status: int, kind: FailureKind
) -> None:
    transport = ses_transport(CONFIG, "secret", _settings(fake_ses))
    fake_ses.fail_next(code, status, "as SES says it")
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(outgoing_email())
    assert failed.value.kind is kind
    assert failed.value.code == code
    assert "as SES says it" in failed.value.message
    # A failed call is not retried by botocore behind the queue's back.
    assert len(fake_ses.requests) == 1
    assert fake_ses.sent == []


def test_an_unverified_from_domain_is_refused_for_good(fake_ses: FakeSes) -> None:
    transport = ses_transport(CONFIG, "secret", _settings(fake_ses))
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(outgoing_email(from_address="sales@unverified.test"))
    assert failed.value.kind is FailureKind.permanent
    assert failed.value.code == "MessageRejected"
    assert "not verified" in failed.value.message


def test_a_suspended_account_blocks_the_channel(fake_ses: FakeSes) -> None:
    fake_ses.account_status = "SUSPENDED"
    transport = ses_transport(CONFIG, "secret", _settings(fake_ses))
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(outgoing_email())
    assert failed.value.kind is FailureKind.channel_blocked


def test_sending_faster_than_the_account_rate_is_throttled_as_retry(fake_ses: FakeSes) -> None:
    fake_ses.max_send_rate = 2
    transport = ses_transport(CONFIG, "secret", _settings(fake_ses))
    transport.send_email(outgoing_email())
    transport.send_email(outgoing_email())
    with pytest.raises(ChannelSendError) as throttled:
        transport.send_email(outgoing_email())
    assert throttled.value.kind is FailureKind.retry
    assert throttled.value.code == "TooManyRequestsException"
    assert len(fake_ses.sent) == 2


def test_no_answer_after_the_request_went_out_is_unknown_never_resent(
    fake_ses: FakeSes,
) -> None:
    fake_ses.delay_seconds = 1.5
    transport = ses_transport(CONFIG, "secret", _settings(fake_ses, email_timeout_seconds=0.5))
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(outgoing_email())
    assert failed.value.kind is FailureKind.unknown
    # SES took it: the one request is all there was.
    assert len(fake_ses.sent) == 1
    assert len([r for r in fake_ses.requests if r[0] == "POST"]) == 1


def test_an_unreachable_endpoint_is_retry() -> None:
    settings = Settings(
        database_url="sqlite://", ses_endpoint_url="http://127.0.0.1:9", email_timeout_seconds=1
    )
    transport = ses_transport(CONFIG, "secret", settings)
    with pytest.raises(ChannelSendError) as failed:
        transport.send_email(outgoing_email())
    assert failed.value.kind is FailureKind.retry


def test_an_account_without_credentials_is_an_auth_problem() -> None:
    settings = Settings(database_url="sqlite://")
    with pytest.raises(ChannelSendError) as failed:
        ses_transport(CONFIG, None, settings)
    assert failed.value.kind is FailureKind.auth
