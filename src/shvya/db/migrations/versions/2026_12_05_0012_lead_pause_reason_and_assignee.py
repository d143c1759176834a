"""Why a lead's AI is paused and since when; who the lead is assigned to.

leads: add ai_paused_reason (string), ai_paused_at (timestamp) and assigned_user_id (FK users,
SET NULL when the user is deleted); index ix_leads_company_id_assigned_user_id, and the partial
index ix_leads_paused (company_id, ai_paused_at) over paused leads for GET /leads?needs_person.

Existing installations: a paused lead takes the reason and time of its latest AIPaused event
(a handoff wrote "handoff: <reason>" there), so leads handed off before this revision show up
as needing a person. A paused lead without such an event keeps both NULL.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shvya.db.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ai_paused_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("ai_paused_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("assigned_user_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_leads_assigned_user_id_users"),
            "users",
            ["assigned_user_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            batch_op.f("ix_leads_company_id_assigned_user_id"),
            ["company_id", "assigned_user_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_leads_paused",
            ["company_id", "ai_paused_at"],
            unique=False,
            sqlite_where=sa.text("ai_paused"),
            postgresql_where=sa.text("ai_paused"),
        )
    _backfill_pauses()


def _backfill_pauses() -> None:
    leads = sa.table(
        "leads",
        sa.column("id", sa.Uuid()),
        sa.column("ai_paused", sa.Boolean()),
        sa.column("ai_paused_reason", sa.String()),
        sa.column("ai_paused_at", shvya.db.base.UTCDateTime(timezone=True)),
    )
    events = sa.table(
        "events",
        sa.column("id", sa.Uuid()),
        sa.column("entity_type", sa.String()),
        sa.column("entity_id", sa.Uuid()),
        sa.column("type", sa.String()),
        sa.column("data", sa.JSON()),
        sa.column("created_at", shvya.db.base.UTCDateTime(timezone=True)),
    )
    connection = op.get_bind()
    # Paused leads are few (the queue of conversations waiting for a person): one look-up each.
    paused = connection.execute(sa.select(leads.c.id).where(leads.c.ai_paused)).scalars().all()
    for lead_id in paused:
        latest = connection.execute(
            sa.select(events.c.data, events.c.created_at)
            .where(
                events.c.entity_type == "lead",
                events.c.entity_id == lead_id,
                events.c.type == "AIPaused",
            )
            .order_by(events.c.created_at.desc(), events.c.id.desc())
            .limit(1)
        ).first()
        if latest is None:
            continue
        reason = (latest.data or {}).get("reason")
        connection.execute(
            sa.update(leads)
            .where(leads.c.id == lead_id)
            .values(
                ai_paused_reason=str(reason)[:200] if reason else None,
                ai_paused_at=latest.created_at,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_leads_paused",
            sqlite_where=sa.text("ai_paused"),
            postgresql_where=sa.text("ai_paused"),
        )
        batch_op.drop_index(batch_op.f("ix_leads_company_id_assigned_user_id"))
        batch_op.drop_constraint(batch_op.f("fk_leads_assigned_user_id_users"), type_="foreignkey")
        batch_op.drop_column("assigned_user_id")
        batch_op.drop_column("ai_paused_at")
        batch_op.drop_column("ai_paused_reason")
