"""Job handlers of the AI salesperson."""

from __future__ import annotations

from typing import Any

from shvya.db.phases import Phases
from shvya.jobs.runner import JobContext


def engage(ctx: JobContext) -> Phases[dict[str, Any]]:
    """ai.engage: answer the lead's unanswered messages (ai.engage)."""
    from shvya.ai.engage import engage as run

    return run(ctx)


def bumpup(ctx: JobContext) -> Phases[dict[str, Any]]:
    """followup.bumpup: nudge a lead who went quiet (ai.followups)."""
    from shvya.ai.followups import bumpup as run

    return run(ctx)


def summarise(ctx: JobContext) -> Phases[dict[str, Any]]:
    """ai.summary: 3 to 5 sentences on the lead for the team (ai.followups)."""
    from shvya.ai.followups import summarise as run

    return run(ctx)
