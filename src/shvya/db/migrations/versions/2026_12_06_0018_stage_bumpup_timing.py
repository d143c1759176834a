"""Automatic bump-ups: a stage's timing, a lead's next look.

stages: add bumpup_idle_minutes and bumpup_max (integers, NULL: the defaults, 20 h on
WhatsApp Cloud and the sandbox, 24 h on WhatsApp Web, 2 bump-ups). leads: add next_bumpup_at
(timestamp) and the partial index ix_leads_next_bumpup over leads that have one and whose AI
is not paused: the scheduler's claim reads only the due rows (docs/scheduler.md).

Existing installations: nothing is backfilled. A lead is looked at once SHVYA next sends it a
message, so upgrading does not bump every quiet conversation of the past at once.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import shvya.db.base
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "next_bumpup_at IS NOT NULL AND NOT ai_paused"


def upgrade() -> None:
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bumpup_idle_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bumpup_max", sa.Integer(), nullable=True))
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_bumpup_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_leads_next_bumpup",
            ["next_bumpup_at"],
            unique=False,
            sqlite_where=sa.text(WHERE),
            postgresql_where=sa.text(WHERE),
        )


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_leads_next_bumpup", sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE)
        )
        batch_op.drop_column("next_bumpup_at")
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.drop_column("bumpup_max")
        batch_op.drop_column("bumpup_idle_minutes")
