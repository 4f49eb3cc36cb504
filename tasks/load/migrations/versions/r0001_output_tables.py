"""The output tables as the releases before versioned migrations left them.

On an empty schema it creates every table. On tables made by an earlier release (no version table
yet) it creates what is missing and adds the columns added since the first release; columns that
release had and this one no longer writes (``segment_runs.model``) are left as they are.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from tasks.database import load_sql, quote_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
MONEY = sa.Float().with_variant(sa.Numeric(), "postgresql")


def upgrade() -> None:
    schema = context.config.attributes["output_schema"]
    postgres = op.get_bind().dialect.name == "postgresql"
    customer_id = sa.BigInteger() if context.config.attributes["customer_id_is_integer"]() else sa.Text()

    create_or_complete(
        "segment_runs",
        schema,
        [
            sa.Column("run_id", sa.Text, primary_key=True),
            sa.Column("flow_run_id", sa.Text),
            sa.Column("as_of", sa.Date, nullable=False),
            sa.Column("started_at", TIMESTAMP, nullable=False),
            sa.Column("finished_at", TIMESTAMP),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("model_action", sa.Text),
            sa.Column("model_reason", sa.Text),
            sa.Column("model_version", sa.Text),
            sa.Column("n_clusters", sa.Integer),
            sa.Column("k_reason", sa.Text),
            sa.Column("rows_scanned", sa.BigInteger),
            sa.Column("rows_in_window", sa.BigInteger),
            sa.Column("rows_before_window", sa.BigInteger),
            sa.Column("rows_rejected", sa.BigInteger),
            sa.Column("rejected_by_reason", JSON),
            sa.Column("customers", sa.BigInteger),
            sa.Column("customers_clustered", sa.BigInteger),
            sa.Column("customers_no_net_purchases", sa.BigInteger),
            sa.Column("inertia", sa.Float),
            sa.Column("silhouette", sa.Float),
            sa.Column("davies_bouldin", sa.Float),
            sa.Column("calinski_harabasz", sa.Float),
            sa.Column("elbow", JSON),
            sa.Column("drift", JSON),
            sa.Column("segment_changes", JSON),
            sa.Column("algorithm_comparison", JSON),
            sa.Column("settings", JSON),
            sa.Column("error", sa.Text),
            sa.CheckConstraint("status in ('running', 'succeeded', 'failed', 'superseded')"),
        ],
        [("segment_runs_as_of_idx", ["as_of", "status"], {})],
    )
    profile_statistics = [
        sa.Column(f"{statistic}_{feature}", sa.Float)
        for feature in ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days")
        for statistic in ("mean", "median")
    ]
    create_or_complete(
        "segment_profiles",
        schema,
        [
            sa.Column(
                "run_id",
                sa.Text,
                sa.ForeignKey(f"{schema + '.' if schema else ''}segment_runs.run_id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("as_of", sa.Date, nullable=False),
            sa.Column("segment_id", sa.Integer, primary_key=True),
            sa.Column("segment_name", sa.Text, nullable=False),
            sa.Column("description", sa.Text, nullable=False),
            sa.Column("recommended_action", sa.Text, nullable=False),
            sa.Column("customers", sa.BigInteger, nullable=False),
            sa.Column("share", sa.Float, nullable=False),
            *profile_statistics,
            sa.Column("mean_r_score", sa.Float),
            sa.Column("mean_f_score", sa.Float),
            sa.Column("mean_m_score", sa.Float),
            sa.Column("centroid", JSON),
            sa.Column("attribute_means", JSON),
        ],
        [("segment_profiles_as_of_idx", ["as_of"], {})],
    )
    create_or_complete(
        "segment_models",
        schema,
        [
            sa.Column("model_version", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("created_at", TIMESTAMP, nullable=False),
            sa.Column("training_run_id", sa.Text, nullable=False),
            sa.Column("trained_as_of", sa.Date, nullable=False),
            sa.Column("format_version", sa.Integer, nullable=False),
            sa.Column("n_clusters", sa.Integer, nullable=False),
            sa.Column("features", sa.Text, nullable=False),
            sa.Column("model", JSON, nullable=False),
        ],
    )
    create_or_complete(
        "customer_segments",
        schema,
        [
            sa.Column("customer_id", customer_id, primary_key=True, autoincrement=False),
            sa.Column("segment_id", sa.Integer, nullable=False),
            sa.Column("segment_name", sa.Text, nullable=False),
            sa.Column("recency_days", sa.Integer),
            sa.Column("frequency", sa.Integer),
            sa.Column("monetary", MONEY),
            sa.Column("avg_order_value", MONEY),
            sa.Column("tenure_days", sa.Integer),
            sa.Column("r_score", sa.SmallInteger),
            sa.Column("f_score", sa.SmallInteger),
            sa.Column("m_score", sa.SmallInteger),
            sa.Column("as_of", sa.Date, nullable=False),
            sa.Column("run_id", sa.Text, nullable=False),
            sa.Column("model_version", sa.Text, nullable=False),
            sa.Column("scored_at", TIMESTAMP, nullable=False),
        ],
    )
    # The first release required frequency and monetary; segments of customer attributes alone leave
    # them empty.
    columns = {column["name"]: column for column in sa.inspect(op.get_bind()).get_columns("customer_segments", schema)}
    required = [name for name in ("frequency", "monetary") if not columns[name]["nullable"]]
    if required:
        with op.batch_alter_table("customer_segments", schema=schema) as table:
            for name in required:
                table.alter_column(name, nullable=True, existing_type=columns[name]["type"])

    # Segment membership over time: a row only when a customer's segment changes; valid_to is the
    # as-of date of the run that moved the customer elsewhere (exclusive), null while current.
    open_rows = sa.text("valid_to is null")
    if postgres:
        # the open rows with their segment, read by every run's change detection from the index alone
        op.drop_index("customer_segment_history_open_idx", schema=schema, if_exists=True)
        open_index = ("customer_segment_history_open_rows_idx", ["customer_id"], {"postgresql_include": ["segment_id"]})
    else:
        open_index = ("customer_segment_history_open_idx", ["customer_id"], {})
    create_or_complete(
        "customer_segment_history",
        schema,
        [
            sa.Column("customer_id", customer_id, primary_key=True, autoincrement=False),
            sa.Column("segment_id", sa.Integer, nullable=False),
            sa.Column("segment_name", sa.Text, nullable=False),
            sa.Column("valid_from", sa.Date, primary_key=True),
            sa.Column("valid_to", sa.Date),
            sa.Column("run_id", sa.Text, nullable=False),
        ],
        [
            (*open_index[:2], open_index[2] | {"postgresql_where": open_rows, "sqlite_where": open_rows}),
            ("customer_segment_history_valid_from_idx", ["valid_from"], {}),
            (
                "customer_segment_history_valid_to_idx",
                ["valid_to"],
                {"postgresql_where": sa.text("valid_to is not null"), "sqlite_where": sa.text("valid_to is not null")},
            ),
        ],
    )
    connection = op.get_bind()
    op.execute(
        load_sql(
            "segment_transitions",
            segment_transitions=quote_table(connection, "segment_transitions", schema),
            segment_runs=quote_table(connection, "segment_runs", schema),
            history=quote_table(connection, "customer_segment_history", schema),
            or_replace=postgres,
        )
    )


def create_or_complete(
    name: str,
    schema: str | None,
    columns: list[sa.Column | sa.CheckConstraint],
    indexes: Sequence[tuple[str, list[str], dict[str, Any]]] = (),
) -> None:
    """Create table ``name``, or add the columns and indexes it lacks (made by an earlier release)."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(name, schema=schema):
        op.create_table(name, *columns, schema=schema)
    else:
        present = {column["name"] for column in inspector.get_columns(name, schema=schema)}
        for column in columns:
            if isinstance(column, sa.Column) and column.name not in present:
                op.add_column(name, sa.Column(column.name, column.type), schema=schema)
    existing = {index["name"] for index in inspector.get_indexes(name, schema=schema)}
    for index_name, index_columns, options in indexes:
        if index_name not in existing:
            op.create_index(index_name, name, index_columns, schema=schema, **options)


def downgrade() -> None:
    raise NotImplementedError("the output tables are only upgraded; restore a backup to go back")
