"""The composition root of the workers: which handler runs which job type, and which sources
of due work the scheduler asks (docs/scheduler.md).

It lives beside app.py, not in jobs/, so that the queue imports no domain. Tests and
benchmarks name their own mapping in SHVYA_JOB_HANDLERS.
"""

from __future__ import annotations

from shvya.ai import tasks as ai_tasks
from shvya.channels import tasks as channel_tasks
from shvya.jobs.runner import Handler
from shvya.jobs.service import PLANNED_JOB_TYPES, JobType
from shvya.knowledge import tasks as knowledge_tasks
from shvya.sequences import tasks as sequence_tasks
from shvya.sequences.scheduler import DueSource
from shvya.webhooks import tasks as webhook_tasks


def default_handlers() -> dict[str, Handler]:
    handlers: dict[str, Handler] = {
        JobType.ai_engage.value: ai_tasks.engage,
        JobType.agent_reply.value: channel_tasks.send_person_message,
        JobType.channel_notice.value: channel_tasks.send_notice,
        JobType.followup_bumpup.value: ai_tasks.bumpup,
        JobType.ai_summary.value: ai_tasks.summarise,
        JobType.kb_ingest.value: knowledge_tasks.ingest_document,
        JobType.templates_sync.value: channel_tasks.sync_templates,
        JobType.templates_submit.value: channel_tasks.submit_template,
        JobType.webhook_reminder.value: webhook_tasks.deliver,
        JobType.sequence_step.value: sequence_tasks.sequence_step,
        JobType.email_sequence.value: sequence_tasks.email_sequence,
    }
    expected = {t.value for t in JobType} - {t.value for t in PLANNED_JOB_TYPES}
    assert set(handlers) == expected, "every job type SHVYA enqueues needs a handler"
    return handlers


def default_due_sources() -> list[DueSource]:
    """What each scheduler tick turns into jobs, in this order (imported here, not at the top:
    a worker that runs no scheduler does not load them)."""
    from shvya.sequences.bumpups import due_bumpups
    from shvya.sequences.service import due_steps
    from shvya.webhooks.service import due_deliveries

    # Bump-ups first: they answer live conversations (P1); sequence steps and webhook
    # deliveries are bulk (P2). Each source is its own committed batches (docs/scheduler.md).
    return [due_bumpups, due_steps, due_deliveries]
