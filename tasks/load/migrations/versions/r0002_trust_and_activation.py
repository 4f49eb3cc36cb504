"""Segments a marketer can trust and act on: each profile's purity and stability, each customer's
previous segment and the date they entered the current one, and the guest rows of each run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = sa.Float().with_variant(sa.Numeric(), "postgresql")


def upgrade() -> None:
    schema = context.config.attributes["output_schema"]
    additions: dict[str, list[sa.Column]] = {
        "segment_profiles": [sa.Column("purity", sa.Float), sa.Column("stability", sa.Float)],
        "customer_segments": [
            sa.Column("previous_segment_id", sa.Integer),
            sa.Column("previous_segment_name", sa.Text),
            sa.Column("segment_since", sa.Date),
        ],
        "segment_runs": [sa.Column("guest_rows", sa.BigInteger), sa.Column("guest_net_amount", MONEY)],
    }
    for table, columns in additions.items():
        present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table, schema=schema)}
        for column in columns:
            if column.name not in present:
                op.add_column(table, column, schema=schema)


def downgrade() -> None:
    raise NotImplementedError("the output tables are only upgraded; restore a backup to go back")
