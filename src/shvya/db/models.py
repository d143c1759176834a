"""Every model, imported once so that Alembic and the tests see one complete metadata."""

from shvya.ai.models import AIModel, AISession, AIUsage
from shvya.channels.email_domains import EmailDomain
from shvya.channels.models import EmailFeedback, EmailReputation
from shvya.conversations.models import Message
from shvya.crm.models import Lead, LeadContact, Pipeline, Stage, Suppression
from shvya.db.base import Base
from shvya.events.models import Event
from shvya.jobs.models import Job
from shvya.knowledge.models import AIKBDoc, AIKBPassage
from shvya.reports.models import ReportCache
from shvya.sequences.models import Sequence, SequenceStep
from shvya.templates.models import Template
from shvya.tenancy.models import (
    ApiKey,
    ChannelAccount,
    Company,
    OperatorKey,
    User,
    WhatsAppBusinessAccount,
)
from shvya.webhooks.models import WebhookDelivery, WebhookSubscription

__all__ = [
    "AIKBDoc",
    "AIKBPassage",
    "AIModel",
    "AISession",
    "AIUsage",
    "ApiKey",
    "Base",
    "ChannelAccount",
    "Company",
    "EmailDomain",
    "EmailFeedback",
    "EmailReputation",
    "Event",
    "Job",
    "Lead",
    "LeadContact",
    "Message",
    "OperatorKey",
    "Pipeline",
    "ReportCache",
    "Sequence",
    "SequenceStep",
    "Stage",
    "Suppression",
    "Template",
    "User",
    "WebhookDelivery",
    "WebhookSubscription",
    "WhatsAppBusinessAccount",
]
