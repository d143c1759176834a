"""Which handler runs which job type. Tests and benchmarks name their own mapping in
SHVYA_JOB_HANDLERS."""

from __future__ import annotations

import importlib

from shvya.ai import tasks as ai_tasks
from shvya.channels import tasks as channel_tasks
from shvya.events import tasks as event_tasks
from shvya.jobs.runner import Handler
from shvya.jobs.service import JobType
from shvya.sequences import tasks as sequence_tasks


def default_handlers() -> dict[str, Handler]:
    handlers: dict[str, Handler] = {
        JobType.ai_engage.value: ai_tasks.engage,
        JobType.channel_notice.value: channel_tasks.send_notice,
        JobType.followup_bumpup.value: ai_tasks.bumpup,
        JobType.ai_summary.value: ai_tasks.summarise,
        JobType.sequence_step.value: sequence_tasks.run_step,
        JobType.email_sequence.value: sequence_tasks.send_email_step,
        JobType.webhook_reminder.value: event_tasks.remind,
        JobType.kb_ingest.value: ai_tasks.ingest_document,
        JobType.templates_sync.value: channel_tasks.sync_templates,
        JobType.templates_submit.value: channel_tasks.submit_template,
    }
    assert set(handlers) == {t.value for t in JobType}, "every job type needs a handler"
    return handlers


def load_handlers(reference: str) -> dict[str, Handler]:
    """The handlers a "module:function" reference returns (SHVYA_JOB_HANDLERS)."""
    module_name, _, function_name = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RuntimeError(
            f"SHVYA_JOB_HANDLERS={reference!r} does not name a function ({exc})"
        ) from None
    handlers: dict[str, Handler] = factory()
    return handlers
