"""What an official provider SDK raises, as the ProviderError the job queue reads.

OpenAI's and Anthropic's SDKs are generated alike: an error with no HTTP answer (a timeout, a
refused connection), an error carrying the answer's status code, and a common base for both.
A status means the same whoever answered it, so both adapters (and the OpenAI embeddings)
map their SDK's errors here. This module imports no SDK: each adapter names its classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

from shvya.ai.providers import ProviderError, ProviderErrorKind

# A 200 whose body we cannot read (not JSON, fields missing): the SDKs do not check it.
UNREADABLE_ANSWER = (ValueError, TypeError, AttributeError, IndexError, KeyError)


class _StatusError(Protocol):
    """What both SDKs' APIStatusError carry: the status, a message, the HTTP answer."""

    status_code: int
    message: str
    response: Any


def status_error(status_code: int, message: str, *, retry_after: str | None) -> ProviderError:
    """A provider's HTTP error answer: 429 (retry after its Retry-After), 401 or 403 (a person
    must fix the key), 408, 409 or 5xx (try again; 529 is Anthropic's "overloaded"), else a
    request that can never succeed as it is."""
    if status_code == 429:
        return ProviderError(
            ProviderErrorKind.rate_limited, message, retry_after_seconds=_seconds(retry_after)
        )
    if status_code in (401, 403):
        return ProviderError(ProviderErrorKind.auth, message)
    kind = (
        ProviderErrorKind.unavailable
        if status_code >= 500 or status_code in (408, 409)
        else ProviderErrorKind.bad_request
    )
    return ProviderError(kind, f"HTTP {status_code}: {message}")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SDKErrors:
    """One SDK's error classes: `base` of all it raises, `status` for an HTTP error answer,
    `connection` for no answer at all (timeouts are connection errors too)."""

    base: type[Exception]
    status: type[Exception]
    connection: type[Exception]

    def provider_error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, self.status):
            answer = cast(_StatusError, exc)
            response = answer.response
            return status_error(
                answer.status_code,
                str(answer.message),
                retry_after=response.headers.get("retry-after") if response is not None else None,
            )
        if isinstance(exc, self.connection):
            return ProviderError(ProviderErrorKind.unavailable, type(exc).__name__)
        return ProviderError(ProviderErrorKind.bad_response, f"{type(exc).__name__}: {exc}")

    @contextmanager
    def mapped(self) -> Iterator[None]:
        """Around a call into the SDK and the reading of its answer: whatever the SDK raises,
        and an answer we cannot read, leave as a ProviderError."""
        try:
            yield
        except self.base as exc:
            raise self.provider_error(exc) from None
        except UNREADABLE_ANSWER as exc:
            raise ProviderError(
                ProviderErrorKind.bad_response, f"{type(exc).__name__}: {exc}"
            ) from None
