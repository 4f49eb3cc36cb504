"""Read the output tables back: the latest successful run, its profiles and model, a sample of its
customers, the transitions view, and the current segments in chunks (for the report and the export).

Readers never write. Every table name is quoted by :func:`tasks.load.schema.output_tables`; values
are bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.database import connection_errors, make_engine
from tasks.errors import SegmentsError
from tasks.load.model_store import read_model
from tasks.load.runs import RUN_COLUMNS
from tasks.load.schema import OutputTables, output_tables
from tasks.model.lifecycle import StoredModel
from tasks.settings import SegmentSettings

EXPORT_CHUNK_ROWS = 100_000


class NoRunError(SegmentsError):
    """There is no successful run to report on or export."""


@dataclass(frozen=True)
class LatestRun:
    """The latest successful run: its record, profiles and model, and the elbow of the run that trained
    that model (a run that reused the model or had K fixed computed none of its own)."""

    record: dict[str, Any]
    profiles: pd.DataFrame
    stored_model: StoredModel | None
    training_elbow: dict[str, Any] | None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _connect(settings: SegmentSettings) -> tuple[sa.Engine, str]:
    url = settings.database_url.get_secret_value()
    return make_engine(url), url


def _reflected(conn: Connection, tables: OutputTables, name: str) -> sa.Table:
    """An output table or view with the columns it has in the database (``customer_segments`` gains a
    column per customer attribute used), for Core statements: SQLAlchemy quotes every name."""
    return sa.Table(name, sa.MetaData(), schema=tables.schema_name, autoload_with=conn)


def _require_outputs(conn: Connection, tables: OutputTables, settings: SegmentSettings) -> None:
    inspector = sa.inspect(conn)
    for table in ("segment_runs", "segment_profiles", "customer_segments"):
        if not inspector.has_table(table, schema=tables.schema_name):
            raise NoRunError(
                f"no {table} table in {settings.masked_database_url()}"
                + (f" (schema {settings.output_schema!r})" if tables.schema_name else "")
                + "; run `segments run` (or `segments demo`) first"
            )


def read_latest_run(settings: SegmentSettings) -> LatestRun:
    """The latest succeeded run with its profiles and the model version it scored with.

    Raises :class:`NoRunError` (one line: what to run) when there is none.
    """
    engine, url = _connect(settings)
    try:
        with connection_errors(url), engine.connect() as conn:
            tables = output_tables(conn, settings)
            _require_outputs(conn, tables, settings)
            runs = tables.table("segment_runs", RUN_COLUMNS)
            row = (
                conn.execute(
                    sa.select(runs).where(runs.c.status == "succeeded").order_by(runs.c.finished_at.desc()).limit(1)
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NoRunError(
                    f"no successful run in {settings.masked_database_url()}; run `segments run` "
                    "(or `segments demo`) first"
                )
            record = {key: (_json(value) if key in _JSON_RUN else value) for key, value in row.items()}
            profile_table = _reflected(conn, tables, "segment_profiles")
            profiles = pd.read_sql_query(
                sa.select(profile_table)
                .where(profile_table.c.run_id == record["run_id"])
                .order_by(profile_table.c.segment_id),
                conn,
            )
            version = record.get("model_version")
            stored = read_model(conn, tables, int(version)) if version is not None else None
            training_elbow = None
            if stored is not None:
                training_elbow = _json(
                    conn.execute(sa.select(runs.c.elbow).where(runs.c.run_id == stored.training_run_id)).scalar()
                )
    finally:
        engine.dispose()
    return LatestRun(record=record, profiles=profiles, stored_model=stored, training_elbow=training_elbow)


_JSON_RUN = {"rejected_by_reason", "elbow", "drift", "segment_changes", "settings", "algorithm_comparison"}


def read_segment_sample(settings: SegmentSettings, columns: list[str], size: int) -> pd.DataFrame:
    """At most ``size`` clustered customers (reserved segment 0 left out), picked at random by the
    database, with ``segment_id``, ``segment_name`` and ``columns``."""
    engine, url = _connect(settings)
    try:
        with connection_errors(url), engine.connect() as conn:
            tables = output_tables(conn, settings)
            table = tables.table("customer_segments", {name: None for name in ["segment_id", "segment_name", *columns]})
            query = sa.select(*table.c).where(table.c.segment_id != 0).order_by(sa.func.random()).limit(size)
            frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=["segment_id", "segment_name", *columns])
    finally:
        engine.dispose()
    for column in columns:
        converted = pd.to_numeric(frame[column], errors="coerce")
        if converted.notna().sum() == frame[column].notna().sum():  # numeric (Decimal from PostgreSQL)
            frame[column] = converted.astype("float64")
    return frame


def read_transitions(settings: SegmentSettings) -> pd.DataFrame | None:
    """The ``segment_transitions`` view (moves between the two latest as-of dates), or ``None`` when
    there is only one date so far."""
    engine, url = _connect(settings)
    try:
        with connection_errors(url), engine.connect() as conn:
            tables = output_tables(conn, settings)
            if not sa.inspect(conn).has_table("customer_segment_history", schema=tables.schema_name):
                return None
            frame = pd.read_sql_query(sa.select(_reflected(conn, tables, "segment_transitions")), conn)
    finally:
        engine.dispose()
    if frame.empty or frame["from_as_of"].isna().all():
        return None
    frame["customers"] = frame["customers"].astype("int64")
    return frame


def iter_current_segments(settings: SegmentSettings, chunk_rows: int = EXPORT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """``customer_segments`` in chunks of ``chunk_rows``, ordered by customer id (for the export).

    The read runs in one transaction, so every chunk comes from the same committed run.
    """
    engine, url = _connect(settings)
    try:
        with connection_errors(url), engine.connect() as conn:
            if settings.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            tables = output_tables(conn, settings)
            _require_outputs(conn, tables, settings)
            assignments = _reflected(conn, tables, "customer_segments")
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
                sa.select(assignments).order_by(assignments.c.customer_id)
            )
            for rows in result.partitions(chunk_rows):
                yield pd.DataFrame(rows, columns=list(result.keys()))
    finally:
        engine.dispose()
