"""Incremental nights: the per-customer state a run with a change column keeps
(``customer_feature_state``), and what each run records about its extract (mode and why, customers
aggregated, customers a full aggregation corrected, the watermark and the settings its state was
built with).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MONEY = sa.Float().with_variant(sa.Numeric(), "postgresql")


def upgrade() -> None:
    schema = context.config.attributes["output_schema"]
    inspector = sa.inspect(op.get_bind())
    present = {column["name"] for column in inspector.get_columns("segment_runs", schema=schema)}
    for column in (
        sa.Column("extract_mode", sa.Text),
        sa.Column("extract_reason", sa.Text),
        sa.Column("customers_recomputed", sa.BigInteger),
        sa.Column("reconciliation_differences", sa.BigInteger),
        sa.Column("watermark", sa.Text),
        sa.Column("state_fingerprint", sa.Text),
    ):
        if column.name not in present:
            op.add_column("segment_runs", column, schema=schema)
    if not inspector.has_table("customer_feature_state", schema=schema):
        customer_id: sa.types.TypeEngine[Any] = (
            sa.BigInteger() if context.config.attributes["customer_id_is_integer"]() else sa.Text()
        )
        op.create_table(
            "customer_feature_state",
            sa.Column("customer_id", customer_id, primary_key=True),
            sa.Column("frequency", sa.BigInteger, nullable=False),
            sa.Column("monetary", MONEY),
            sa.Column("last_order_us", sa.BigInteger),
            sa.Column("first_order_us", sa.BigInteger),
            sa.Column("window_rows", sa.BigInteger, nullable=False),
            sa.Column("earliest_row_us", sa.BigInteger),
            sa.Column("pending_from_us", sa.BigInteger),
            schema=schema,
            comment="The job's running per-customer aggregates for incremental nights; not for BI.",
        )


def downgrade() -> None:
    raise NotImplementedError("the output tables are only upgraded; restore a backup to go back")
