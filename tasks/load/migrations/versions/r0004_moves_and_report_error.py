"""What a run records about its moves and its report: how many customers changed segment, how many
of them only because a refit changed the model, and the error of a report or artifact that failed
after the write committed (the run itself stays ``succeeded``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["output_schema"]
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("segment_runs", schema=schema)}
    for column in (
        sa.Column("customers_moved", sa.BigInteger),
        sa.Column("moved_by_refit", sa.BigInteger),
        sa.Column("report_error", sa.Text),
    ):
        if column.name not in present:
            op.add_column("segment_runs", column, schema=schema)


def downgrade() -> None:
    raise NotImplementedError("the output tables are only upgraded; restore a backup to go back")
