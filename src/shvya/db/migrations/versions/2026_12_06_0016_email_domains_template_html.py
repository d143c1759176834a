"""Sending domains and email templates: email_domains, templates.html.

email_domains: one row per (company, domain) holding the DKIM selector, the private key
encrypted with SHVYA_SECRET_KEY and the base64 public key the company publishes in DNS
(docs/email-domains.md). templates: add html (the Jinja2 source of an email template's HTML
part; the text part stays in body and the subject in subject). NULL for existing templates;
nothing is backfilled.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 01:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import shvya.db.base
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_domains",
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("private_key_encrypted", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_email_domains_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_domains")),
        sa.UniqueConstraint(
            "company_id", "domain", name=op.f("uq_email_domains_company_id_domain")
        ),
    )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("html", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("html")
    op.drop_table("email_domains")
