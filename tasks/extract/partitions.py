"""The extract's aggregation split into customer-id ranges that run in parallel (PostgreSQL).

A coordinator transaction exports its snapshot and stays open; each partition opens its own
connection, adopts that snapshot (``SET TRANSACTION SNAPSHOT``) and aggregates the customers whose id
lies in its range, so the partitions and the coordinator's row counts describe exactly the same rows,
wherever the partitions run (Dask workers in the flow, threads of the job otherwise). Partitions are
disjoint and cover every customer: concatenated, they equal the one-query extract.

Ranges are cut at quantiles of a sample of the source's ids. With the covering index each partition
reads only its own part of the index, so N partitions use N database cores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import psycopg.errors
from sqlalchemy import Connection, text

from tasks.database import connection_errors, load_sql, make_engine, quote_identifier, quote_table
from tasks.errors import ConfigurationError, EmptySourceError, ExtractTimeoutError
from tasks.extract.features import (
    begin_extract_transaction,
    count_rows,
    features_at,
    read_with_copy,
    typed_customer_rows,
)
from tasks.extract.queries import query_parameters, render_count_query, render_feature_query
from tasks.extract.result import ExtractResult
from tasks.extract.source import SourceColumns, inspect_source
from tasks.settings import SegmentSettings

#: Rows sampled from a large source to cut the ranges: enough to cut within a fraction of a percent.
SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class PartitionPlan:
    """What a partition needs to run anywhere: the settings, the date and the shared snapshot."""

    settings: SegmentSettings
    as_of: date
    snapshot: str
    source: SourceColumns
    # the customer ids where one partition ends and the next begins, ascending; partitions = bounds + 1
    bounds: tuple[Any, ...]
    # how long a partition's aggregation may run before PostgreSQL stops it (its statement_timeout)
    time_limit_seconds: float = 3600.0

    @property
    def partitions(self) -> int:
        return len(self.bounds) + 1


def extract_partition(plan: PartitionPlan, partition: int) -> pd.DataFrame:
    """The raw feature rows of the customers in ``partition`` (0-based), read in the plan's snapshot.

    Its time limit is the database's (``statement_timeout``): in a Dask worker's thread a Prefect
    task's timeout cannot interrupt a query waiting on the server."""
    if not 0 <= partition < plan.partitions:
        raise ValueError(f"partition {partition} of {plan.partitions}")
    settings = plan.settings
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    lower = plan.bounds[partition - 1] if partition > 0 else None
    upper = plan.bounds[partition] if partition < len(plan.bounds) else None
    try:
        sql = render_feature_query(
            engine, settings, plan.source, lower_bound=lower is not None, upper_bound=upper is not None
        )
        params = query_parameters(settings, plan.as_of, plan.source)
        params |= {key: value for key, value in (("lower_bound", lower), ("upper_bound", upper)) if value is not None}
        with connection_errors(url), engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET TRANSACTION SNAPSHOT " + snapshot_literal(plan.snapshot))
            conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
            limit = f"{round(plan.time_limit_seconds * 1000)}ms"
            conn.execute(text("select set_config('statement_timeout', :limit, true)"), {"limit": limit})
            try:
                frame = read_with_copy(conn, sql, params)
            except psycopg.errors.QueryCanceled as error:
                if "statement timeout" not in (error.diag.message_primary or ""):
                    raise  # cancelled by someone else (pg_cancel_backend)
                raise ExtractTimeoutError(
                    f"partition {partition + 1} of {plan.partitions} of the extract ran longer than "
                    f"{plan.time_limit_seconds:g} s and PostgreSQL stopped it ({error.diag.message_primary}); "
                    "nothing was written"
                ) from None
            conn.rollback()
        return frame
    finally:
        engine.dispose()


def snapshot_literal(snapshot: str) -> str:
    # pg_export_snapshot() returns e.g. 00000003-0000001B-1; SET TRANSACTION SNAPSHOT takes no parameter
    if not re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{8}-[0-9]+", snapshot):
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    return f"'{snapshot}'"


def partition_bounds(settings: SegmentSettings, partitions: int) -> tuple[Any, ...]:
    """Customer ids that cut the source into ``partitions`` ranges of about equal rows: quantiles of a
    sample of about :data:`SAMPLE_ROWS` rows of a large source (a ``TABLESAMPLE SYSTEM`` block sample
    of a table; of a view, rows drawn at random as it is read), of every row of a small one. Equal cuts
    (an id holding many rows) collapse into one, so fewer partitions may come back than asked for; a
    range may hold no customer, which is harmless. The size of a view, or of a table never analyzed,
    is the planner's estimate."""
    if partitions < 2:
        return ()
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        source_table = quote_table(engine, settings.source_table)
        with connection_errors(url), engine.connect() as conn:
            kind, analyzed_rows = conn.execute(
                text("select relkind, reltuples from pg_class where oid = cast(:table as regclass)"),
                {"table": str(source_table)},
            ).one()
            table = kind in ("r", "m")
            if table and analyzed_rows >= 0:
                estimated_rows = float(analyzed_rows)
            else:  # a view, or a table never analyzed (reltuples -1): the planner's estimate
                plan = conn.exec_driver_sql(f"explain (format json) select 1 from {source_table}").scalar_one()
                estimated_rows = float(plan[0]["Plan"]["Plan Rows"])
            share = min(1.0, SAMPLE_ROWS / estimated_rows) if estimated_rows > 0 else 1.0
            sql = load_sql(
                "partition_bounds",
                source_table=source_table,
                customer_id=quote_identifier(engine, settings.customer_id_column, "column"),
                sample=table and share < 1.0,
                row_sample=not table and share < 1.0,
            )
            fractions = [index / partitions for index in range(1, partitions)]
            params = {"fractions": fractions, "sample_percent": max(0.01, 100.0 * share), "row_fraction": share}
            cuts = conn.execute(text(sql), params).scalar_one()
            conn.rollback()
    finally:
        engine.dispose()
    return tuple(sorted({cut for cut in cuts or () if cut is not None}))


@contextmanager
def shared_snapshot(settings: SegmentSettings) -> Iterator[tuple[Connection, str]]:
    """Hold the extract's transaction open and yield its connection and exported snapshot id."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            begin_extract_transaction(conn)
            yield conn, str(conn.execute(text("select pg_export_snapshot()")).scalar_one())
            conn.rollback()
    finally:
        engine.dispose()


PartitionRunner = Callable[[PartitionPlan], list[pd.DataFrame]]


def extract_in_partitions(settings: SegmentSettings, as_of: date, run_partitions: PartitionRunner) -> ExtractResult:
    """The extract of :func:`tasks.extract.features.extract_customer_features`, its aggregation split
    into ``settings.partitions`` partitions that ``run_partitions`` runs (on Dask in the flow, on
    threads otherwise); the rows are counted afterwards in the same snapshot."""
    if settings.dialect != "postgresql":
        raise ConfigurationError(
            "SEGMENTS_PARTITIONS above 1 needs PostgreSQL (SQLite has one writer and no snapshots)"
        )
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        source = inspect_source(engine, settings)
        count_sql = render_count_query(engine, settings, source)
    finally:
        engine.dispose()
    params = query_parameters(settings, as_of, source)
    bounds = partition_bounds(settings, settings.partitions)
    with shared_snapshot(settings) as (conn, snapshot):
        plan = PartitionPlan(settings=settings, as_of=as_of, snapshot=snapshot, source=source, bounds=bounds)
        frames = run_partitions(plan)
        counts = count_rows(conn, count_sql, params)
    if counts.rows_scanned == 0:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
    features = features_at(typed_customer_rows(frames, source.customer_id_is_integer, settings.source_table), as_of)
    if features.empty:
        raise EmptySourceError(f"no usable rows before as-of {as_of.isoformat()} in {settings.source_table!r}")
    return ExtractResult(
        features=features, counts=counts, as_of=as_of, customer_id_is_integer=source.customer_id_is_integer
    )


def partitions_in_threads(plan: PartitionPlan) -> list[pd.DataFrame]:
    """Run every partition at once, each on a thread of this process with its own connection. The work
    is in PostgreSQL: the threads wait."""
    with ThreadPoolExecutor(max_workers=plan.partitions, thread_name_prefix="extract-partition") as pool:
        return list(pool.map(lambda partition: extract_partition(plan, partition), range(plan.partitions)))
