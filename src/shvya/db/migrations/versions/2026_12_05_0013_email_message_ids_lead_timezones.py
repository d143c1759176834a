"""Email threading and quiet hours: messages.email_message_id, leads.timezone.

messages: add email_message_id (the RFC 5322 Message-ID of an email, without angle brackets)
and the index ix_messages_company_id_email_message_id, by which a reply's In-Reply-To or
References finds the message it answers. leads: add timezone (an IANA zone name), the first
place quiet hours look for the lead's local time. Both start NULL; nothing is backfilled.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_message_id", sa.String(length=998), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_messages_company_id_email_message_id"),
            ["company_id", "email_message_id"],
            unique=False,
        )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("timezone")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_company_id_email_message_id"))
        batch_op.drop_column("email_message_id")
