"""``customer_segments``: the current segment of every customer, rewritten by each run inside its write
transaction. The table itself stays: its rows are deleted and written again, so the indexes, comments,
grants, triggers, row-level security policies and views that users add to it survive every run, and
readers (BI queries, lookups) go on reading the previous rows until the commit without waiting: a
``DELETE`` locks only the rows, where ``TRUNCATE`` would lock the table against every reader.

The rows deleted are read back in the same statement: the history is brought in line by comparing
them with the run's rows, which also gives each customer's previous segment and the date they entered
the current one (:mod:`tasks.load.history`). Then the run's rows are written with one ``COPY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from tasks.database import SqlKeyword, load_sql, quote_identifier, read_with_copy
from tasks.errors import SourceError
from tasks.load.copy import copy_rows_into, records
from tasks.load.history import ENTRY_COLUMNS, REPLACED_COLUMNS, update_history
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


@dataclass(frozen=True)
class SegmentMoves:
    """Who changed segment in a run: how many customers moved, how many of them moved only because a
    refit changed the model (their segment under the previous model is the one they left; ``None``
    when the run did not refit), and the count of each move from one segment to another. All
    ``None`` / empty for a backfill, which leaves the history as it was."""

    history_updated: bool
    customers_moved: int | None = None
    moved_by_refit: int | None = None
    moves: list[dict[str, Any]] = field(default_factory=list)


def replace_assignments(
    conn: Connection,
    settings: SegmentSettings,
    tables: OutputTables,
    assignments: pd.DataFrame,
    customer_id_is_integer: bool,
    *,
    as_of: date,
    run_id: str,
    previous_model_segments: pd.Series | None = None,
) -> SegmentMoves:
    """Replace the rows of ``customer_segments`` with ``assignments`` and bring the history in line (see
    the module). ``previous_model_segments`` holds, on a refit, each customer's segment id under the
    model it replaces (same index as ``assignments``). Returns who moved, and whether the history was
    updated (not for a backfill: see :func:`tasks.load.history.update_history`)."""
    check_customer_id_type(conn, settings, tables, customer_id_is_integer)
    add_attribute_columns(conn, tables, assignments)
    replaced = delete_current_rows(conn, tables)
    update = update_history(conn, tables, as_of, run_id, replaced, assignments)
    if update is None:
        moves = SegmentMoves(history_updated=False)
        entry = pd.DataFrame({name: pd.Series([None] * len(assignments), dtype=object) for name in ENTRY_COLUMNS})
        entry.index = assignments.index
    else:
        moves = count_moves(assignments, update.entry, update.moved_from, previous_model_segments)
        entry = update.entry
    rows = pd.concat([assignments, entry], axis=1)
    if not len(rows):
        return moves
    if conn.dialect.name == "postgresql":
        copy_rows_into(conn, tables.schema_name, "customer_segments", list(rows.columns), rows)
    else:
        extra = dict.fromkeys(assignments.columns[len(ASSIGNMENT_COLUMNS) :])
        kinds = ASSIGNMENT_COLUMNS | extra | {"previous_segment_id": sa.Integer, "segment_since": sa.Date}
        table = tables.table("customer_segments", kinds | {"previous_segment_name": sa.Text})
        conn.execute(table.insert(), records(rows, set()))
    return moves


def count_moves(
    assignments: pd.DataFrame, entry: pd.DataFrame, moved_from: pd.Series, previous_model_segments: pd.Series | None
) -> SegmentMoves:
    """:class:`SegmentMoves` from the history's comparison: ``moved_from`` is the segment each customer
    left (NA for those who stayed or are new), ``entry`` names it."""
    moved = moved_from.notna()
    by_refit = None
    if previous_model_segments is not None:
        under_previous = previous_model_segments.reindex(assignments.index)
        by_refit = int((moved & (under_previous == moved_from).fillna(False)).sum())
    pairs = pd.DataFrame(
        {
            "from_segment_id": moved_from[moved].astype("int64"),
            "from_segment_name": entry.loc[moved, "previous_segment_name"].astype(str),
            "to_segment_id": assignments.loc[moved, "segment_id"].astype("int64"),
            "to_segment_name": assignments.loc[moved, "segment_name"].astype(str),
        }
    )
    counted = pairs.value_counts().rename("customers").reset_index()
    return SegmentMoves(
        history_updated=True,
        customers_moved=int(moved.sum()),
        moved_by_refit=by_refit,
        moves=[{str(key): value for key, value in row.items()} for row in counted.to_dict(orient="records")],
    )


def reclaim_replaced_rows(engine: Engine, tables: OutputTables) -> None:
    """``VACUUM ANALYZE customer_segments`` after the commit (PostgreSQL): the rows a run replaced are
    reclaimed at once instead of waiting for autovacuum, which a server may have off, so that nights do
    not pile up dead rows for the next write to step over. It blocks no reader or writer, and skips
    the table when another session holds a lock that would make it wait."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"vacuum (analyze, skip_locked) {tables.customer_segments}")


def delete_current_rows(conn: Connection, tables: OutputTables) -> pd.DataFrame:
    """Delete every row of ``customer_segments`` and return what the history comparison reads of them
    (``REPLACED_COLUMNS``), in one statement; dates as timestamps."""
    statement = load_sql("customer_segments_replaced", customer_segments=tables.customer_segments)
    try:
        replaced = _read_replaced_rows(conn, statement)
    except sa.exc.ProgrammingError as error:
        if isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
            raise SourceError(
                f"the job's role may not delete from {tables.customer_segments}: make it the table's owner or "
                "grant it DELETE (`segments grants` prints the grants)"
            ) from None
        raise
    return replaced.astype({"segment_id": "Int64", "previous_segment_id": "Int64"}).assign(
        segment_since=pd.to_datetime(replaced["segment_since"]), as_of=pd.to_datetime(replaced["as_of"])
    )


def _read_replaced_rows(conn: Connection, statement: str) -> pd.DataFrame:
    if conn.dialect.name != "postgresql":
        return pd.DataFrame(conn.exec_driver_sql(statement).all(), columns=REPLACED_COLUMNS)
    try:
        return read_with_copy(conn, statement, {})
    except psycopg.Error as error:  # raised as SQLAlchemy raises any other statement's error
        raise sa.exc.DBAPIError.instance(statement, None, error, psycopg.Error) from error


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
