"""Suppression sources: the old free-form values become SuppressionSource values.

suppressions.source: "webhook" (a provider told us) becomes "provider", "api" and "cli" (a
person) become "manual", "ai" (the AI understood the lead asking to stop) becomes "keyword".
"keyword" stays. The column keeps its type; only values change. Downgrade maps back
"provider" to "webhook", "manual" to "api", and "unsubscribe_link", "bounce" and "complaint"
(which had no value of their own) to "webhook"; "keyword" stays "keyword" (which rows were
"ai" or "cli" is not recorded).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 01:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = {"webhook": "provider", "api": "manual", "cli": "manual", "ai": "keyword"}
DOWNGRADE = {
    "provider": "webhook",
    "manual": "api",
    "unsubscribe_link": "webhook",
    "bounce": "webhook",
    "complaint": "webhook",
}


def _remap(mapping: dict[str, str]) -> None:
    suppressions = sa.table("suppressions", sa.column("source", sa.String(32)))
    for old, new in mapping.items():
        op.execute(suppressions.update().where(suppressions.c.source == old).values(source=new))


def upgrade() -> None:
    _remap(UPGRADE)


def downgrade() -> None:
    _remap(DOWNGRADE)
