"""``customer_segments``: the current segment of every customer, rewritten by each run inside its write
transaction. The table itself stays: emptied and filled again, so the indexes, comments, grants,
triggers, row-level security policies and views that users add to it survive every run.

The run's rows first go to a temporary table (``customer_segments_incoming``), which the history is
brought in line with; then ``customer_segments`` is emptied and filled from it, with each customer's
previous segment and the date they entered the current one taken from the history.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.database import QuotedIdentifier, SqlKeyword, load_sql, quote_identifier, quote_table
from tasks.errors import SourceError
from tasks.load.copy import copy_rows_into
from tasks.load.schema import OutputTables
from tasks.settings import SegmentSettings

#: The columns every run writes, in table order, with their types for Core statements; the customer
#: attributes a model uses follow them.
ASSIGNMENT_COLUMNS: dict[str, Any] = {
    "customer_id": None,
    "segment_id": sa.Integer,
    "segment_name": sa.Text,
    "recency_days": sa.Integer,
    "frequency": sa.Integer,
    "monetary": sa.Float,
    "avg_order_value": sa.Float,
    "tenure_days": sa.Integer,
    "r_score": sa.Integer,
    "f_score": sa.Integer,
    "m_score": sa.Integer,
    "as_of": sa.Date,
    "run_id": sa.Text,
    "model_version": sa.Text,
    "scored_at": sa.DateTime(timezone=True),
}
INCOMING = "customer_segments_incoming"


def incoming_table(conn: Connection) -> QuotedIdentifier:
    """The quoted name of the run's temporary table of incoming rows."""
    return quote_table(conn, INCOMING, "pg_temp" if conn.dialect.name == "postgresql" else "temp")


def stage_assignments(
    conn: Connection,
    settings: SegmentSettings,
    tables: OutputTables,
    assignments: pd.DataFrame,
    customer_id_is_integer: bool,
) -> QuotedIdentifier:
    """Write the run's rows into a temporary table shaped like ``customer_segments`` (dropped at the
    end of the transaction; one COPY on PostgreSQL) and return its name."""
    check_customer_id_type(conn, settings, tables, customer_id_is_integer)
    add_attribute_columns(conn, tables, assignments)
    incoming = incoming_table(conn)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"create temporary table {INCOMING} (like {tables.customer_segments}) on commit drop")
        if len(assignments):
            copy_rows_into(conn, "pg_temp", INCOMING, list(assignments.columns), assignments)
        return incoming
    conn.exec_driver_sql(f"drop table if exists {incoming}")
    conn.exec_driver_sql(f"create temp table {INCOMING} as select * from {tables.customer_segments} where 0")
    if len(assignments):
        extra = dict.fromkeys(assignments.columns[len(ASSIGNMENT_COLUMNS) :])
        table = sa.table(INCOMING, *(sa.column(name, kind) for name, kind in (ASSIGNMENT_COLUMNS | extra).items()))
        conn.execute(table.insert(), records(assignments, set()))
    return incoming


def replace_assignments(conn: Connection, tables: OutputTables, columns: list[str]) -> None:
    """Empty ``customer_segments`` (PostgreSQL: ``TRUNCATE``, rolled back with the transaction) and fill
    it from the incoming rows, with each customer's previous segment and the date they entered the
    current one (``sql/customer_segments_from_incoming.sql``)."""
    try:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"truncate table {tables.customer_segments}")
        else:
            conn.exec_driver_sql(f"delete from {tables.customer_segments}")
    except sa.exc.ProgrammingError as error:
        if isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
            raise SourceError(
                f"the job's role may not empty {tables.customer_segments}: make it the table's owner or grant "
                "it TRUNCATE (`segments grants` prints the grants)"
            ) from None
        raise
    sql = load_sql(
        "customer_segments_from_incoming",
        customer_segments=tables.customer_segments,
        incoming=incoming_table(conn),
        history=tables.customer_segment_history,
        columns=QuotedIdentifier(", ".join(quote_identifier(conn, column) for column in columns)),
        incoming_columns=QuotedIdentifier(
            ", ".join(f"incoming.{quote_identifier(conn, column)}" for column in columns)
        ),
    )
    conn.exec_driver_sql(sql)


def check_customer_id_type(
    conn: Connection, settings: SegmentSettings, tables: OutputTables, customer_id_is_integer: bool
) -> None:
    """The table keeps the id type it was created with: a source whose ids changed type is an error."""
    columns = sa.inspect(conn).get_columns("customer_segments", schema=tables.schema_name)
    is_integer = any(column["name"] == "customer_id" and isinstance(column["type"], sa.Integer) for column in columns)
    if is_integer != customer_id_is_integer:
        wanted = "integer" if customer_id_is_integer else "text"
        raise SourceError(
            f"customer_segments.customer_id holds {'integer' if is_integer else 'text'} ids but the source's "
            f"{settings.customer_id_column!r} is {wanted}; drop or rename the old customer_segments table, or use "
            "another SEGMENTS_OUTPUT_SCHEMA"
        )


def add_attribute_columns(conn: Connection, tables: OutputTables, assignments: pd.DataFrame) -> None:
    """A column for each customer attribute the model used (numbers as floats, others as text): these
    are the user's choice of columns (SEGMENTS_FEATURES), so they are added here, not by a migration."""
    present = {
        column["name"] for column in sa.inspect(conn).get_columns("customer_segments", schema=tables.schema_name)
    }
    for name in assignments.columns[len(ASSIGNMENT_COLUMNS) :]:
        if name not in present:
            numeric = pd.api.types.is_numeric_dtype(assignments[name])
            kind = SqlKeyword(
                ("double precision" if conn.dialect.name == "postgresql" else "real") if numeric else "text"
            )
            conn.exec_driver_sql(
                f"alter table {tables.customer_segments} add column {quote_identifier(conn, name)} {kind}"
            )


def records(frame: pd.DataFrame, json_columns: set[str]) -> list[dict[str, Any]]:
    """``frame`` as a list of plain dicts for executemany: missing values as None, timestamps as
    datetimes, JSON text columns parsed."""
    rows: list[dict[str, Any]] = [
        {str(key): value for key, value in row.items()}
        for row in frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    ]
    for row in rows:
        for column, value in row.items():
            if isinstance(value, pd.Timestamp):
                row[column] = value.to_pydatetime()
        for column in json_columns:
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
    return rows
