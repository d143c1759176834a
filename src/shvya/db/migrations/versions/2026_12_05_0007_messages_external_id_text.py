"""messages.external_id as TEXT: a provider's message id is kept whole, however long.

A WhatsApp delivery carrying a wamid over 255 characters failed on PostgreSQL (value too long)
and was answered 500, so Meta redelivered it, with every message beside it, for days
(docs/reliability.md P1). On PostgreSQL varchar to text needs no table rewrite; SQLite's
batch mode copies the table.

Downgrading fails on PostgreSQL while a stored id is longer than 255 characters.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "external_id",
            existing_type=sa.String(length=255),
            type_=sa.Text(),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "external_id",
            existing_type=sa.Text(),
            type_=sa.String(length=255),
            existing_nullable=True,
        )
