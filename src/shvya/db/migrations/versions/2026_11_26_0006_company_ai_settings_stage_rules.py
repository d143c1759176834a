"""Company settings the AI salesperson needs, and the pipeline's stage rules.

companies: currency (ISO 4217), default_language (ISO 639-1), ai_enabled, handoff_message.
pipelines: stage_rules (JSON list; NULL means the built-in rules, [] means none).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False)
        )
        batch_op.add_column(
            sa.Column("default_language", sa.String(length=8), server_default="en", nullable=False)
        )
        batch_op.add_column(
            sa.Column("ai_enabled", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(sa.Column("handoff_message", sa.Text(), nullable=True))
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "stage_rules",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("stage_rules")
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.drop_column("handoff_message")
        batch_op.drop_column("ai_enabled")
        batch_op.drop_column("default_language")
        batch_op.drop_column("currency")
