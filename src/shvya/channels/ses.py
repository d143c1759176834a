"""Amazon SES (API v2) as an email transport (docs/email-providers.md section 1).

SHVYA composes and DKIM-signs the message itself; SES gets those bytes unchanged through
SendEmail's Raw content and answers with its MessageId. One boto3 client per transport,
reused for every send. botocore's own retries are off: a retry is the job queue's decision
(with its backoff and its record), and botocore retrying a read timeout could send twice.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from shvya.channels.adapters import ChannelSendError, FailureKind, SendResult
from shvya.channels.email_message import EmailTransport, OutgoingEmail
from shvya.config import Settings

# SESv2 error codes (docs/email-providers.md 1.3). Anything 5xx not named here is `retry`.
RETRY_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
        "NotFoundException",
        "ValidationException",
        "InvalidParameterValue",
    }
)
CHANNEL_BLOCKED_CODES = frozenset(
    {"AccountSuspendedException", "SendingPausedException", "AccessDeniedException"}
)
AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)


def failure_kind(code: str, http_status: int) -> FailureKind:
    """What a SESv2 error means for the send: branch on the error code, then the status."""
    if code in AUTH_CODES:
        return FailureKind.auth
    if code in CHANNEL_BLOCKED_CODES:
        return FailureKind.channel_blocked
    if code in RETRY_CODES or http_status == 429 or http_status >= 500:
        return FailureKind.retry
    if code in PERMANENT_CODES or 400 <= http_status < 500:
        return FailureKind.permanent
    return FailureKind.unknown


class SesTransport:
    """Delivers composed email through SESv2 SendEmail with Raw content."""

    def __init__(
        self,
        *,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        configuration_set: str | None = None,
        endpoint_url: str | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.configuration_set = configuration_set
        self._client: Any = boto3.session.Session().client(
            "sesv2",
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=10,
            ),
        )

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "Unknown")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = str(error.get("Message") or "") or f"SES answered HTTP {status}"
            raise ChannelSendError(failure_kind(code, status), code, message) from None
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            # Never reached SES: safe to try again.
            raise ChannelSendError(FailureKind.retry, "connect", str(exc)) from None
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            # Sent, but no answer: SES may have taken it. Resending could send it twice.
            raise ChannelSendError(FailureKind.unknown, "no_response", str(exc)) from None
        except BotoCoreError as exc:
            raise ChannelSendError(
                FailureKind.unknown, "transport", f"{type(exc).__name__}: {exc}"
            ) from None
        return response

    def send_email(self, email: OutgoingEmail) -> SendResult:
        kwargs: dict[str, Any] = {
            "Destination": {"ToAddresses": [email.to]},
            "Content": {"Raw": {"Data": email.raw}},
        }
        if self.configuration_set:
            kwargs["ConfigurationSetName"] = self.configuration_set
        body = self._call("send_email", **kwargs)
        message_id = body.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            raise ChannelSendError(
                FailureKind.unknown, "bad_response", "SES answered without a MessageId"
            )
        return SendResult(external_id=message_id)

    def verify(self) -> None:
        """GetAccount: refused credentials raise ChannelSendError(FailureKind.auth)."""
        self._call("get_account")

    def close(self) -> None:
        self._client.close()


def ses_transport(config: dict[str, Any], secret: str | None, settings: Settings) -> EmailTransport:
    """The TransportFactory for {"provider": "ses"} accounts: config holds region,
    access_key_id and optionally configuration_set; the secret is the secret access key."""
    region = config.get("region")
    access_key_id = config.get("access_key_id")
    if not isinstance(region, str) or not region:
        raise ChannelSendError(FailureKind.auth, "config", "the SES account has no region")
    if not isinstance(access_key_id, str) or not access_key_id or not secret:
        raise ChannelSendError(
            FailureKind.auth,
            "config",
            "the SES account needs access_key_id and secret_access_key",
        )
    configuration_set = config.get("configuration_set")
    return SesTransport(
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret,
        configuration_set=configuration_set if isinstance(configuration_set, str) else None,
        endpoint_url=settings.ses_endpoint_url,
        timeout_seconds=settings.email_timeout_seconds,
    )
