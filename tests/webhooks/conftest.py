from __future__ import annotations

from collections.abc import Iterator

import pytest

from shvya.config import Settings
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.support import FakeClock
from tests.webhooks.support import documented_verifier


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The receiver is on 127.0.0.1: private addresses allowed, as docs/webhooks.md 5 says tests
    # do. Two failed deliveries in a row disable a subscription, so the test stays short.
    return Settings(
        database_url=database_url,
        webhook_allow_private=True,
        webhook_timeout_seconds=5,
        webhook_disable_after_failures=2,
    )


@pytest.fixture
def receiver(clock: FakeClock) -> Iterator[WebhookReceiver]:
    """Checks every signature with the documented snippet, against the test's clock."""
    with WebhookReceiver(verify=documented_verifier(), now=lambda: clock.now().timestamp()) as fake:
        yield fake
