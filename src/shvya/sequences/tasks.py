"""Job handlers of follow-up sequences. The sequences issue fills these in; until then each
says, in its job's result, that it did nothing."""

from __future__ import annotations

from typing import Any

from shvya.jobs.runner import JobContext


def run_step(ctx: JobContext) -> dict[str, Any]:
    return {"outcome": "not_implemented", "detail": "sequence steps arrive with sequences"}


def send_email_step(ctx: JobContext) -> dict[str, Any]:
    return {"outcome": "not_implemented", "detail": "email sequences arrive with email"}
