"""No log line shows a secret: the WhatsApp verify token in the handshake's query string, a
channel token in a URL, an API key (src/shvya/redact.py)."""

from __future__ import annotations

import io
import logging

from fastapi.testclient import TestClient
from uvicorn.logging import AccessFormatter

from shvya import redact
from shvya.app import create_app
from shvya.config import Settings

TOKEN = "verify-me-0f3a9c"


def handler_like(config_handler: str) -> tuple[logging.Handler, io.StringIO]:
    """A handler as `redact.uvicorn_log_config` builds it, writing to a buffer."""
    config = redact.uvicorn_log_config("INFO")
    spec = config["handlers"][config_handler]
    assert spec["filters"] == ["redact_secrets"]
    assert config["filters"]["redact_secrets"]["()"] == "shvya.redact.RedactSecrets"
    formatter_spec = config["formatters"][spec["formatter"]]
    formatter: logging.Formatter = (
        AccessFormatter(formatter_spec["fmt"], use_colors=False)
        if spec["formatter"] == "access"
        else logging.Formatter(formatter_spec.get("format") or formatter_spec.get("fmt"))
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(redact.RedactSecrets())
    return handler, stream


def test_every_handler_of_the_server_filters_secrets() -> None:
    config = redact.uvicorn_log_config("INFO")
    assert config["handlers"], config
    for name, spec in config["handlers"].items():
        assert spec["filters"] == ["redact_secrets"], name
    assert config["root"]["handlers"] == ["shvya"]
    for name, logger in config["loggers"].items():
        assert set(logger.get("handlers", [])) <= set(config["handlers"]), name


def test_the_handshakes_access_line_hides_the_verify_token(database_url: str) -> None:
    settings = Settings(database_url=database_url, meta_verify_token=TOKEN)
    path = f"/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=4242"
    with TestClient(create_app(settings)) as client:
        answered = client.get(path)
    assert (answered.status_code, answered.text) == (200, "4242")

    # The record uvicorn's access log makes of that request (uvicorn/protocols/http).
    access, stream = handler_like("access")
    access.handle(
        logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            0,
            '%s - "%s %s HTTP/%s" %d',
            ("203.0.113.5:50123", "GET", path, "1.1", 200),
            None,
        )
    )
    line = stream.getvalue()
    assert TOKEN not in line
    assert "hub.verify_token=[redacted]" in line
    assert "hub.mode=subscribe" in line and "hub.challenge=4242" in line
    assert '"GET /webhooks/whatsapp?' in line and " 200" in line


def test_our_own_log_lines_hide_secrets() -> None:
    own, stream = handler_like("shvya")
    logger = logging.getLogger("shvya.tests.redact")
    logger.addHandler(own)
    logger.propagate = False
    key = "shvya_0123456789ab_" + "c" * 48
    try:
        logger.warning(
            "graph call failed: %s",
            "https://graph.example/v25.0/media?access_token=EAAGsecret&fields=url",
            extra={"url": "/x?password=hunter22&page=2"},
        )
        logger.warning("refused key %s with Authorization: Bearer %s", key, key)
        try:
            raise RuntimeError("GET /webhooks/whatsapp?hub.verify_token=" + TOKEN)
        except RuntimeError:
            logger.exception("handshake failed")
    finally:
        logger.removeHandler(own)
        logger.propagate = True
    text = stream.getvalue()
    for secret in ("EAAGsecret", "hunter22", "c" * 48, TOKEN):
        assert secret not in text, secret
    assert "access_token=[redacted]&fields=url" in text
    assert (
        "refused key shvya_0123456789ab_[redacted] with Authorization: Bearer [redacted]\n" in text
    )
    assert "hub.verify_token=[redacted]" in text
    assert "RuntimeError" in text  # the traceback is still there, only the secret is gone


def test_what_is_redacted() -> None:
    cases = {
        "/a?token=x": "/a?token=[redacted]",
        "/a?page=2&api_key=x": "/a?page=2&api_key=[redacted]",
        "/a?hub%2Everify_token=x": "/a?hub%2Everify_token=[redacted]",
        "/a?X-Hub-Signature=x;b=1": "/a?X-Hub-Signature=[redacted];b=1",
        "/a?client_secret=x&code=y": "/a?client_secret=[redacted]&code=[redacted]",
        "/a?page=2&limit=50": "/a?page=2&limit=50",
        "/a?hub.challenge=123": "/a?hub.challenge=123",
        "/a?token=": "/a?token=",
    }
    for text, expected in cases.items():
        assert redact.redact(text) == expected, text
