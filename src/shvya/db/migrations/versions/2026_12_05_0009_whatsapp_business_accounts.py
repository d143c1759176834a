"""One company per WhatsApp Business Account, and channel accounts that need a person.

whatsapp_business_accounts: waba_id (unique) -> company_id. Meta's template-status and consent
webhooks name only the WABA, so a WABA shared by two companies sent one company's template
news to the other (docs/whatsapp.md 1.14).
channel_accounts: needs_attention, needs_attention_since (Meta refused the token).

Existing accounts: each WABA in a WhatsApp account's config goes to the company that connected
it first. A later account of another company with the same WABA loses the WABA from its config
(its templates cannot be managed until it is connected again with its own WABA) and is marked
as needing attention, with the reason.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 07:30:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shvya.db.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "whatsapp_business_accounts",
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("waba_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", shvya.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_whatsapp_business_accounts_company_id_companies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whatsapp_business_accounts")),
        sa.UniqueConstraint("waba_id", name=op.f("uq_whatsapp_business_accounts_waba_id")),
    )
    with op.batch_alter_table("whatsapp_business_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_whatsapp_business_accounts_company_id"), ["company_id"], unique=False
        )
    with op.batch_alter_table("channel_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("needs_attention", sa.String(length=500), nullable=True))
        batch_op.add_column(
            sa.Column(
                "needs_attention_since", shvya.db.base.UTCDateTime(timezone=True), nullable=True
            )
        )
    _assign_existing_wabas()


def _assign_existing_wabas() -> None:
    accounts = sa.table(
        "channel_accounts",
        sa.column("id", sa.Uuid()),
        sa.column("company_id", sa.Uuid()),
        sa.column("channel", sa.String()),
        sa.column("config", _JSON),
        sa.column("created_at", shvya.db.base.UTCDateTime(timezone=True)),
        sa.column("needs_attention", sa.String()),
        sa.column("needs_attention_since", shvya.db.base.UTCDateTime(timezone=True)),
    )
    wabas = sa.table(
        "whatsapp_business_accounts",
        sa.column("id", sa.Uuid()),
        sa.column("company_id", sa.Uuid()),
        sa.column("waba_id", sa.String()),
        sa.column("created_at", shvya.db.base.UTCDateTime(timezone=True)),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(accounts.c.id, accounts.c.company_id, accounts.c.config, accounts.c.created_at)
        .where(accounts.c.channel == "wa_cloud")
        .order_by(accounts.c.created_at, accounts.c.id)
    ).all()
    owners: dict[str, uuid.UUID] = {}
    now = datetime.now(UTC)
    for account_id, company_id, config, created_at in rows:
        waba_id = (config or {}).get("waba_id")
        if not waba_id:
            continue
        waba_id = str(waba_id)
        owner = owners.get(waba_id)
        if owner is None:
            owners[waba_id] = company_id
            bind.execute(
                sa.insert(wabas).values(
                    id=uuid.uuid4(),
                    company_id=company_id,
                    waba_id=waba_id,
                    created_at=created_at or now,
                )
            )
        elif owner != company_id:
            bind.execute(
                sa.update(accounts)
                .where(accounts.c.id == account_id)
                .values(
                    config={k: v for k, v in config.items() if k != "waba_id"},
                    needs_attention=(
                        f"WhatsApp Business Account {waba_id} is also connected to another "
                        "company: connect this number again with the WABA it belongs to"
                    ),
                    needs_attention_since=now,
                )
            )


def downgrade() -> None:
    # The WABA ids taken from the config of a later company's account are not put back: they
    # were another company's.
    with op.batch_alter_table("channel_accounts", schema=None) as batch_op:
        batch_op.drop_column("needs_attention_since")
        batch_op.drop_column("needs_attention")
    with op.batch_alter_table("whatsapp_business_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_whatsapp_business_accounts_company_id"))
    op.drop_table("whatsapp_business_accounts")
