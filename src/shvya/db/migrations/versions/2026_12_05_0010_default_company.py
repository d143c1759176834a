"""The installation's default company is a flag, not a name.

companies.is_default: true for exactly one company (a partial unique index). It is the
company `shvya serve` creates on first start; the sandbox page and the CLI's commands
without --company use it, so renaming it changes nothing.

Existing installations: the company named "Default" (any case) becomes the default, or, when
none has that name, the first company created.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    companies = sa.table(
        "companies",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("created_at", sa.DateTime()),
        sa.column("is_default", sa.Boolean()),
    )
    connection = op.get_bind()
    chosen = connection.execute(
        sa.select(companies.c.id)
        .order_by(
            sa.case((sa.func.lower(companies.c.name) == "default", 0), else_=1),
            companies.c.created_at,
            companies.c.id,
        )
        .limit(1)
    ).scalar()
    if chosen is not None:
        connection.execute(
            sa.update(companies).where(companies.c.id == chosen).values(is_default=True)
        )
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.create_index(
            "uq_companies_default",
            ["is_default"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )


def downgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_companies_default",
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )
        batch_op.drop_column("is_default")
