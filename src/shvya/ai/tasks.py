"""Job handlers of the AI salesperson. The AI issues fill these in; until then each says,
in its job's result, that it did nothing."""

from __future__ import annotations

from typing import Any

from shvya.jobs.runner import JobContext


def _not_yet(what: str) -> dict[str, Any]:
    return {"outcome": "not_implemented", "detail": f"{what}: nothing was sent"}


def engage(ctx: JobContext) -> dict[str, Any]:
    return _not_yet("AI replies arrive with the AI salesperson")


def bumpup(ctx: JobContext) -> dict[str, Any]:
    return _not_yet("bump-ups arrive with the AI salesperson")


def summarise(ctx: JobContext) -> dict[str, Any]:
    return _not_yet("conversation summaries arrive with the AI salesperson")
