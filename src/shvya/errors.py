"""Errors that carry their HTTP status. One handler in app.py renders them all."""

from __future__ import annotations

from typing import Any


class ShvyaError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}

    def to_body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.message, **self.extra}


class NotFound(ShvyaError):
    """Also what another company's row looks like: it does not exist for the caller."""

    code = "not_found"
    status = 404


class Conflict(ShvyaError):
    code = "conflict"
    status = 409


class InvalidInput(ShvyaError):
    code = "invalid_input"
    status = 422


class Unauthorized(ShvyaError):
    code = "unauthorized"
    status = 401


class Forbidden(ShvyaError):
    code = "forbidden"
    status = 403


class TooManyRequests(ShvyaError):
    code = "too_many_requests"
    status = 429


class UnsupportedMediaType(ShvyaError):
    code = "unsupported_media_type"
    status = 415
