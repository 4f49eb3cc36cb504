"""Least-privilege grants for PostgreSQL (`segments grants`): the job reads the source and owns the
output schema; BI tools read the outputs and nothing else."""

from __future__ import annotations

from tasks.database import load_sql, make_engine, quote_identifier, quote_table
from tasks.settings import SegmentSettings, split_table_name


def render_grants(settings: SegmentSettings, *, job_role: str, bi_role: str) -> str:
    """``sql/grants.sql`` for the configured source table and output schema and the given roles."""
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        source_schema, _ = split_table_name(settings.source_table)
        return load_sql(
            "grants",
            source_schema=quote_identifier(engine, source_schema or "public", "schema"),
            source_table=quote_table(engine, settings.source_table),
            output_schema=quote_identifier(engine, settings.output_schema, "schema"),
            job_role=quote_identifier(engine, job_role, "role"),
            bi_role=quote_identifier(engine, bi_role, "role"),
        )
    finally:
        engine.dispose()
