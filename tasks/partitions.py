"""The extract split into customer partitions that run in parallel, for Dask (``prefect-dask``).

A coordinator transaction on PostgreSQL exports its snapshot and stays open; each partition opens its
own connection, adopts that snapshot (``SET TRANSACTION SNAPSHOT``) and aggregates the customers whose
id hashes to it, so the partitions and the row counts describe exactly the same rows, wherever the
partitions run (Dask workers on other machines reach the same database). Partitions are disjoint and
cover every customer: concatenated, they equal the one-query extract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import text

from tasks.database import connection_errors, make_engine
from tasks.errors import ConfigurationError, EmptySourceError
from tasks.extract import (
    ExtractResult,
    count_in_snapshot,
    fetch_with_copy,
    inspect_source,
    prepare_extract_session,
    query_parameters,
    render_count_query,
    render_feature_query,
    row_counts,
    snapshot_literal,
    typed_features,
)
from tasks.settings import SegmentSettings


@dataclass(frozen=True)
class PartitionPlan:
    """What a partition needs to run anywhere: the settings, the date and the shared snapshot."""

    settings: SegmentSettings
    as_of: date
    snapshot: str
    partitions: int


def extract_partition(plan: PartitionPlan, partition: int) -> pd.DataFrame:
    """The raw feature rows of the customers in ``partition`` (0-based), read in the plan's snapshot."""
    settings = plan.settings
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        sql = render_feature_query(engine, settings, partitioned=True)
        params = query_parameters(settings, plan.as_of) | {"partition": partition, "partitions": plan.partitions}
        with connection_errors(url), engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET TRANSACTION SNAPSHOT " + snapshot_literal(plan.snapshot))
            conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
            conn.execute(text("SET LOCAL random_page_cost = 1.1"))
            frame = fetch_with_copy(conn, sql, params)
            conn.rollback()
        return frame
    finally:
        engine.dispose()


@contextmanager
def shared_snapshot(settings: SegmentSettings) -> Iterator[str]:
    """Hold a REPEATABLE READ transaction open and yield its exported snapshot id."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            prepare_extract_session(conn)
            yield str(conn.execute(text("select pg_export_snapshot()")).scalar_one())
            conn.rollback()
    finally:
        engine.dispose()


def extract_in_partitions(
    settings: SegmentSettings,
    as_of: date,
    run_partitions: Callable[[PartitionPlan], list[pd.DataFrame]],
) -> ExtractResult:
    """The extract of :func:`tasks.extract.extract_customer_features`, its aggregation split into
    ``settings.partitions`` partitions that ``run_partitions`` runs (on Dask in the flow; one after
    another in tests), while the counts run here in the same snapshot."""
    if settings.dialect != "postgresql":
        raise ConfigurationError(
            "SEGMENTS_PARTITIONS above 1 needs PostgreSQL (SQLite has one writer and no snapshots)"
        )
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        source = inspect_source(engine, settings)
        count_sql = render_count_query(engine, settings)
    finally:
        engine.dispose()
    params: dict[str, Any] = query_parameters(settings, as_of)
    with shared_snapshot(settings) as snapshot:
        plan = PartitionPlan(settings=settings, as_of=as_of, snapshot=snapshot, partitions=settings.partitions)
        frames = run_partitions(plan)
        engine = make_engine(settings.database_url.get_secret_value())
        try:
            totals = count_in_snapshot(engine, snapshot, count_sql, params)
        finally:
            engine.dispose()
    counts = row_counts(totals)
    if counts.rows_scanned == 0:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
    features, customer_id_is_integer = typed_features(
        frames, source.customer_id_is_integer, source.customer_id_is_number
    )
    if features.empty:
        raise EmptySourceError(f"no usable rows before as-of {as_of.isoformat()} in {settings.source_table!r}")
    return ExtractResult(features=features, counts=counts, as_of=as_of, customer_id_is_integer=customer_id_is_integer)
