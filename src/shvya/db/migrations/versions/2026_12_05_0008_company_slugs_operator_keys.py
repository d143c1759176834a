"""Company names need not be unique; a unique slug names a company in the `shvya` command.
Operator keys: the installation's own keys, which belong to no company.

companies: drop uq_companies_name (a name another company has must not be refused: the
refusal told one tenant another's name); add slug, unique, made from each existing name in
the order the companies were created (`acme-motors`, then `acme-motors-2`...).
operator_keys: id, name, prefix (unique), key_hash, created_at, last_used_at, revoked_at.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 07:00:00
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shvya.db.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _slugify(name: str) -> str:
    # The rule of shvya.tenancy.service.slugify when this revision was written.
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60].strip("-")
    return slug or "company"


def upgrade() -> None:
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slug", sa.String(length=80), nullable=True))
    connection = op.get_bind()
    companies = sa.table(
        "companies",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("slug", sa.String()),
        sa.column("created_at", shvya.db.base.UTCDateTime(timezone=True)),
    )
    taken: set[str] = set()
    rows = connection.execute(
        sa.select(companies.c.id, companies.c.name).order_by(companies.c.created_at, companies.c.id)
    ).all()
    for company_id, name in rows:
        base = _slugify(name)
        slug, number = base, 2
        while slug in taken:
            slug, number = f"{base}-{number}", number + 1
        taken.add(slug)
        connection.execute(
            sa.update(companies).where(companies.c.id == company_id).values(slug=slug)
        )
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.alter_column("slug", existing_type=sa.String(length=80), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_companies_slug"), ["slug"])
        batch_op.drop_constraint("uq_companies_name", type_="unique")

    op.create_table(
        "operator_keys",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_operator_keys_prefix")),
    )


def downgrade() -> None:
    # Fails while two companies share a name: rename one first (PATCH /company).
    op.drop_table("operator_keys")
    with op.batch_alter_table("companies", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_companies_name"), ["name"])
        batch_op.drop_constraint("uq_companies_slug", type_="unique")
        batch_op.drop_column("slug")
