"""Output checks before the write commits, stated the way dbt tests state them: unique non-null ids,
every customer assigned, names of the model, counts that add up. A failure rolls the write back."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.database import load_sql
from tasks.errors import OutputCheckError
from tasks.load.schema import OutputTables


@dataclass(frozen=True)
class OutputFigures:
    """Counts read back inside the write transaction, before commit."""

    customers_written: int
    null_customer_ids: int
    duplicate_customer_ids: int
    customers_without_segment: int
    rows_of_other_runs: int
    customers_in_profiles: int
    segment_names: frozenset[str]


def check_output(figures: OutputFigures, *, expected_customers: int, allowed_names: set[str]) -> None:
    """Raise :class:`OutputCheckError` listing every failed check."""
    failures = []
    if figures.null_customer_ids:
        failures.append(f"{figures.null_customer_ids} null customer ids")
    if figures.duplicate_customer_ids:
        failures.append(f"{figures.duplicate_customer_ids} duplicate customer ids")
    if figures.customers_without_segment:
        failures.append(f"{figures.customers_without_segment} customers without a segment")
    if figures.rows_of_other_runs:
        failures.append(f"{figures.rows_of_other_runs} rows of another run")
    if figures.customers_written != expected_customers:
        failures.append(f"{figures.customers_written:,} customers written, {expected_customers:,} in the run")
    if figures.customers_in_profiles != figures.customers_written:
        failures.append(
            f"profiles count {figures.customers_in_profiles:,} customers, assignments {figures.customers_written:,}"
        )
    unknown = sorted(figures.segment_names - allowed_names)
    if unknown:
        failures.append(f"segment names not in the model: {', '.join(unknown)}")
    if failures:
        raise OutputCheckError("output check failed, nothing committed: " + "; ".join(failures))


def read_output_figures(conn: Connection, tables: OutputTables, run_id: str) -> OutputFigures:
    """The figures of ``sql/output_checks.sql`` and the segment names, read in the write transaction."""
    sql = load_sql(
        "output_checks", customer_segments=tables.customer_segments, segment_profiles=tables.segment_profiles
    )
    row = conn.execute(sa.text(sql), {"run_id": run_id}).mappings().one()
    assignments = tables.table("customer_segments", {"segment_name": sa.Text})
    names = conn.execute(sa.select(assignments.c.segment_name).distinct()).scalars().all()
    return OutputFigures(**{key: int(value) for key, value in row.items()}, segment_names=frozenset(names))
