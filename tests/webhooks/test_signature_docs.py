"""The verification snippet receivers copy is the one the tests run: docs/webhooks.md and the
README show the same code, and it accepts SHVYA's signature and refuses what it must."""

from __future__ import annotations

import time

from shvya.webhooks.service import signature_header
from tests.webhooks.support import REPO, documented_snippet, documented_verifier


def test_the_readme_shows_the_snippet_docs_webhooks_md_shows() -> None:
    assert documented_snippet(REPO / "docs" / "webhooks.md") in (REPO / "README.md").read_text(
        encoding="utf-8"
    )


def test_the_snippet_checks_shvyas_signature_with_the_machines_clock() -> None:
    verify = documented_verifier()
    body = b'{"id":"0193","type":"LeadCreated"}'
    now = int(time.time())
    header = signature_header("whsec_test", body, timestamp=now)
    assert verify("whsec_test", header, body)
    assert not verify("whsec_test", header, body.replace(b"Lead", b"Deal"))
    assert not verify("whsec_wrong", header, body)
    stale = signature_header("whsec_test", body, timestamp=now - 301)  # older than 5 minutes
    assert not verify("whsec_test", stale, body)
    assert verify("whsec_test", stale, body, tolerance=400)
    # Stripe's form: more than one v1 (a secret being rolled), any one may match.
    both = signature_header("whsec_old", body, timestamp=now) + "," + header.split(",")[1]
    assert verify("whsec_test", both, body)
    for broken in ("", "t=", "v1=abc", f"t={now}", "garbage"):
        assert not verify("whsec_test", broken, body)
