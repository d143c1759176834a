"""Email feedback and sending-domain reputation: email_feedback, email_reputation.

email_feedback: one row per provider event about one recipient (a bounce, a complaint, a
delivery, ...), unique per (provider, event_id) so a redelivered SNS or SendGrid webhook is a
no-op, indexed by (company_id, sending_domain, occurred_at) for the rolling window.
email_reputation: one row per (company_id, sending_domain) holding its state (ok, alerted,
paused), the reason and since when. Both tables start empty.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shvya.db.base

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_feedback",
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("sending_domain", sa.String(length=255), nullable=False),
        sa.Column("message_external_id", sa.Text(), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurred_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_email_feedback_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_feedback")),
        sa.UniqueConstraint(
            "provider", "event_id", name=op.f("uq_email_feedback_provider_event_id")
        ),
    )
    op.create_index(
        op.f("ix_email_feedback_company_id_sending_domain_occurred_at"),
        "email_feedback",
        ["company_id", "sending_domain", "occurred_at"],
        unique=False,
    )
    op.create_table(
        "email_reputation",
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("sending_domain", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("counted_from", shvya.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_email_reputation_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_reputation")),
        sa.UniqueConstraint(
            "company_id",
            "sending_domain",
            name=op.f("uq_email_reputation_company_id_sending_domain"),
        ),
    )


def downgrade() -> None:
    op.drop_table("email_reputation")
    op.drop_index(
        op.f("ix_email_feedback_company_id_sending_domain_occurred_at"),
        table_name="email_feedback",
    )
    op.drop_table("email_feedback")
