"""Job handlers of event delivery. Outbound webhooks fill this in; until then it says, in
its job's result, that it did nothing."""

from __future__ import annotations

from typing import Any

from shvya.jobs.runner import JobContext


def remind(ctx: JobContext) -> dict[str, Any]:
    return {"outcome": "not_implemented", "detail": "webhook reminders arrive with webhooks"}
