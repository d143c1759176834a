"""Sequences get their behaviour: step timing and content, stop conditions, enrolments.

sequences: add stop_on (what ends an enrolment; existing rows: [] plus "reply" where
stop_on_reply was set is left to the API, which writes both). sequence_steps: add channel,
after, window, business_days, subject, template, ai_instruction. sequence_enrollments: at most
one live (active or paused) row per (sequence, lead), with a partial index on next_run_at over the rows that have one, so
the scheduler's tick reads only due rows (docs/sequences.md). stages: add
auto_enroll_sequence_id (a lead entering the stage is enrolled; no foreign key, so crm's
tables load without the sequences domain).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import shvya.db.base
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stop_on", JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("channel", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("after", JSON, nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("window", JSON, nullable=True))
        batch_op.add_column(
            sa.Column("business_days", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("subject", sa.String(length=998), nullable=True))
        batch_op.add_column(sa.Column("template", JSON, nullable=True))
        batch_op.add_column(sa.Column("ai_instruction", sa.Text(), nullable=True))
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auto_enroll_sequence_id", sa.Uuid(), nullable=True))
    op.create_table(
        "sequence_enrollments",
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("sequence_id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=False),
        sa.Column("stage_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("queued_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_step_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("replies_after", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stop_reason", sa.String(length=64), nullable=True),
        sa.Column("hold_reason", sa.String(length=200), nullable=True),
        sa.Column("enrolled_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_sequence_enrollments_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_sequence_enrollments_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_sequence_enrollments_sequence_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["stage_id"],
            ["stages.id"],
            name=op.f("fk_sequence_enrollments_stage_id_stages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequence_enrollments")),
    )
    op.create_index(
        "uq_sequence_enrollments_live",
        "sequence_enrollments",
        ["sequence_id", "lead_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('active', 'paused')"),
        postgresql_where=sa.text("status IN ('active', 'paused')"),
    )
    op.create_index(
        op.f("ix_sequence_enrollments_company_id_lead_id"),
        "sequence_enrollments",
        ["company_id", "lead_id"],
        unique=False,
    )
    op.create_index(
        "ix_sequence_enrollments_due",
        "sequence_enrollments",
        ["next_run_at"],
        unique=False,
        sqlite_where=sa.text("next_run_at IS NOT NULL"),
        postgresql_where=sa.text("next_run_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_sequence_enrollments_due", table_name="sequence_enrollments")
    op.drop_index("uq_sequence_enrollments_live", table_name="sequence_enrollments")
    op.drop_index(
        op.f("ix_sequence_enrollments_company_id_lead_id"), table_name="sequence_enrollments"
    )
    op.drop_table("sequence_enrollments")
    with op.batch_alter_table("stages", schema=None) as batch_op:
        batch_op.drop_column("auto_enroll_sequence_id")
    with op.batch_alter_table("sequence_steps", schema=None) as batch_op:
        for column in (
            "ai_instruction",
            "template",
            "subject",
            "business_days",
            "window",
            "after",
            "channel",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("stop_on")
