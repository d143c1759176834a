"""Secrets never reach a log line (docs/reliability.md A15, docs/whatsapp.md 1.5).

A URL's query string is logged whole by the access log (`GET /webhooks/whatsapp?hub.mode=...
&hub.verify_token=...`), and an error message may quote a URL or a key. `RedactSecrets` is a
logging filter on every handler (`log_config`, `install`): it rewrites a record's message, its
arguments, its string extras and its traceback before any formatter sees them.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

MARKER = "[redacted]"
# The format of SHVYA's own log lines (`shvya` commands and the server).
LOG_FORMAT = "%(levelname)s %(name)s %(message)s"

# A query parameter is secret when its name, or a word of it, says so.
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "signature",
        "sig",
        "key",
        "apikey",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "code",
    }
)
_SECRET_ENDINGS = ("token", "secret", "password", "signature", "key")
_PARAMETER = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;?#\s\"']+)=(?P<value>[^&;#\s\"']*)")
# SHVYA's own keys (shvya_<prefix>_<secret>, shvyaop_... for operator keys): the prefix is
# public and helps whoever reads the log; the secret part is not.
_API_KEY = re.compile(r"\b(?P<prefix>shvya(?:op)?_[0-9a-f]{12})_[0-9a-f]{48}\b")
# A bearer credential quoted in a message (an Authorization header in an error).
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer)\s+[A-Za-z0-9._~+/=-]{16,}")


def is_secret_parameter(name: str) -> bool:
    lowered = unquote(name).lower()
    words = {word for word in re.split(r"[^a-z0-9]+", lowered) if word}
    return bool(words & _SECRET_WORDS) or lowered.endswith(_SECRET_ENDINGS)


def _parameter(match: re.Match[str]) -> str:
    if not match["value"] or not is_secret_parameter(match["name"]):
        return match[0]
    return f"{match['lead']}{match['name']}={MARKER}"


def redact(text: str) -> str:
    """`text` with the values of secret query parameters, SHVYA keys and bearer credentials
    replaced by the marker."""
    if "=" in text:
        text = _PARAMETER.sub(_parameter, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MARKER}", text)
    if "shvya" in text:
        text = _API_KEY.sub(lambda m: f"{m['prefix']}_{MARKER}", text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


# Attributes every LogRecord has; anything else came in through `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class RedactSecrets(logging.Filter):
    """Redacts a record in place and always lets it through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn.access") and isinstance(record.args, tuple):
            # uvicorn's access formatter reads its fields (the path with its query string
            # among them) from the arguments, by position: they stay arguments.
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif record.args:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # a broken format: logging reports it as usual
                message = None
            if message is not None:
                record.msg, record.args = redact(message), None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, name, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (the root logger by default), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging configuration, with the filter on each of its handlers and our
    loggers (`shvya.*`, which propagate to the root) written through its default handler.
    Passed to `uvicorn.run(log_config=...)`, so every server process applies it."""
    from uvicorn.config import LOGGING_CONFIG

    handlers = {
        name: {**handler, "filters": ["redact_secrets"]}
        for name, handler in LOGGING_CONFIG["handlers"].items()
    }
    handlers["shvya"] = {
        "formatter": "shvya",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "filters": ["redact_secrets"],
    }
    return {
        **LOGGING_CONFIG,
        "filters": {"redact_secrets": {"()": "shvya.redact.RedactSecrets"}},
        "formatters": {
            **LOGGING_CONFIG["formatters"],
            "shvya": {"format": LOG_FORMAT},
        },
        "handlers": handlers,
        "root": {"handlers": ["shvya"], "level": level},
    }
