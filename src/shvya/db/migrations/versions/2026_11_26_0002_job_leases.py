"""Job leases and publishing: lease_token fences stale workers, published_at feeds the relay.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shvya.db.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_token", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("published_at", shvya.db.base.UTCDateTime(timezone=True), nullable=True)
        )
    if op.get_bind().dialect.name == "postgresql":
        # A hot queue table: rows are updated several times in seconds, so dead index entries
        # pile up at the head of the claim index unless autovacuum visits far more often
        # than its defaults (20% of the table changed) would.
        op.execute(
            "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.0, "
            "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0, "
            "autovacuum_analyze_scale_factor = 0.0, autovacuum_analyze_threshold = 5000, "
            "fillfactor = 80)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE jobs RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay, "
            "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold, fillfactor)"
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("published_at")
        batch_op.drop_column("lease_token")
