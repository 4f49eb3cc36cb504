"""Extract: check the transaction source, then compute per-customer features in the database.

Raw transaction rows never leave the database: the query in ``sql/customer_features.<dialect>.sql``
aggregates them to one row per customer, plus one row of totals (rows scanned, rejected by reason).
"""

from __future__ import annotations

import difflib
import io
import re
import select
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import pq
from psycopg import sql as psql
from psycopg.pq.abc import PGconn
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import NoSuchTableError

from tasks.database import (
    QuotedIdentifier,
    SqlKeyword,
    connection_errors,
    load_sql,
    make_engine,
    quote_identifier,
    quote_table,
)
from tasks.errors import ConfigurationError, EmptySourceError, IndexBuildInProgressError, SegmentsError, SourceError
from tasks.locking import advisory_lock, lock_key
from tasks.settings import SegmentSettings, env_var, split_table_name

FEATURE_COLUMNS = ["recency_days", "frequency", "monetary", "avg_order_value", "tenure_days"]
REJECTION_REASONS = (
    "null_customer_id",
    "null_occurred_at",
    "occurred_at_or_after_as_of",
    "non_numeric_amount",
)
_COUNT_COLUMNS = {
    "scanned_row_count": "rows_scanned",
    "window_row_count": "rows_in_window",
    "before_window_count": "rows_before_window",
    "null_customer_id_count": "null_customer_id",
    "null_occurred_at_count": "null_occurred_at",
    "after_as_of_count": "occurred_at_or_after_as_of",
    "non_numeric_amount_count": "non_numeric_amount",
}
FETCH_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class SourceColumns:
    """The mapped source columns as found in the database."""

    table: str
    customer_id_is_integer: bool
    customer_id_is_number: bool
    occurred_at_type: str
    amount_types: dict[str, str]
    # PostgreSQL: the column's own type when it is a timestamp ("timestamp" or "timestamptz"), so the
    # queries compare it with the as-of bound in that type instead of casting 10M rows; None for a date
    time_type: str | None = None


@dataclass(frozen=True)
class RowCounts:
    """What the extract saw in the source, for the run record."""

    rows_scanned: int
    rows_in_window: int
    rows_before_window: int
    rejected_by_reason: dict[str, int]

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_rejected": self.rows_rejected}


@dataclass(frozen=True)
class ExtractResult:
    """Per-customer features (one row per customer with rows in the window) and the row counts.

    ``row_counts`` may still be being counted (a :class:`~concurrent.futures.Future`): a partitioned
    extract counts the source's rows while the model is fitted, not beside the partitions, which
    need both cores. :attr:`counts` waits for them."""

    features: pd.DataFrame
    row_counts: RowCounts | Future[RowCounts]
    as_of: date
    customer_id_is_integer: bool

    @property
    def counts(self) -> RowCounts:
        if isinstance(self.row_counts, Future):
            return self.row_counts.result()
        return self.row_counts


def as_of_start(as_of: date) -> datetime:
    """``as_of`` 00:00 UTC: rows at or after this instant are not seen by the run."""
    return datetime.combine(as_of, time(0), tzinfo=UTC)


def default_as_of(now: datetime | None = None) -> date:
    """Today in UTC, so that a nightly run sees everything up to the end of yesterday."""
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def _column_roles(settings: SegmentSettings) -> list[tuple[str, str]]:
    """(setting field, column name) for every mapped column."""
    roles = [
        ("customer_id_column", settings.customer_id_column),
        ("occurred_at_column", settings.occurred_at_column),
    ]
    if settings.uses_quantity_times_price:
        assert settings.quantity_column and settings.unit_price_column
        roles += [
            ("quantity_column", settings.quantity_column),
            ("unit_price_column", settings.unit_price_column),
        ]
    else:
        assert settings.amount_column
        roles.append(("amount_column", settings.amount_column))
    if settings.order_id_column:
        roles.append(("order_id_column", settings.order_id_column))
    return roles


def inspect_source(engine: Engine, settings: SegmentSettings) -> SourceColumns:
    """Check that the source table or view exists and holds every mapped column with a usable type.

    Raises :class:`SourceError` naming the table, the column and the setting that mapped it.
    """
    schema, table = split_table_name(settings.source_table)
    with connection_errors(settings.database_url.get_secret_value()):
        inspector = inspect(engine)
        try:
            columns = {column["name"]: column for column in inspector.get_columns(table, schema=schema)}
        except NoSuchTableError:
            raise SourceError(
                f"source table or view {settings.source_table!r} not found in "
                f"{settings.masked_database_url()}; set {env_var('source_table')}"
            ) from None
    if not columns:
        raise SourceError(f"source {settings.source_table!r} has no columns; set {env_var('source_table')}")

    found_types: dict[str, Any] = {}
    for field, column in _column_roles(settings):
        if column not in columns:
            near = difflib.get_close_matches(column, list(columns), n=1) or [
                name for name in columns if name.lower() == column.lower()
            ]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SourceError(
                f"column {column!r} not found in {settings.source_table!r}{hint}; set {env_var(field)} "
                f"(columns there: {', '.join(sorted(columns))})"
            )
        found_types[field] = columns[column]["type"]

    for field in ("amount_column", "quantity_column", "unit_price_column"):
        if field in found_types and not _is_numeric_or_unknown(found_types[field], settings.dialect):
            raise SourceError(
                f"column {getattr(settings, field)!r} in {settings.source_table!r} has type "
                f"{found_types[field]}, not a number; set {env_var(field)} to a numeric column "
                "(or cast it in a view)"
            )
    occurred_type = found_types["occurred_at_column"]
    if settings.dialect == "postgresql" and not isinstance(occurred_type, sqltypes.Date | sqltypes.DateTime):
        raise SourceError(
            f"column {settings.occurred_at_column!r} in {settings.source_table!r} has type {occurred_type}, "
            f"not a date or timestamp; set {env_var('occurred_at_column')} (or cast it in a view)"
        )
    return SourceColumns(
        table=settings.source_table,
        customer_id_is_integer=isinstance(found_types["customer_id_column"], sqltypes.Integer),
        customer_id_is_number=isinstance(found_types["customer_id_column"], sqltypes.Numeric | sqltypes.Float),
        occurred_at_type=str(occurred_type),
        amount_types={field: str(found_types[field]) for field in found_types if "amount" in field},
        time_type=_native_time_type(occurred_type) if settings.dialect == "postgresql" else None,
    )


def _native_time_type(column_type: Any) -> str | None:
    if isinstance(column_type, sqltypes.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    return None


def check_source(settings: SegmentSettings) -> SourceColumns:
    """Before a run: the database is reachable, the source and its columns exist with usable types,
    and it holds at least one row. Raises a :class:`SegmentsError` with a one-line message."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        source = inspect_source(engine, settings)
        schema, table = split_table_name(settings.source_table)
        probe = sa.select(sa.literal(1)).select_from(sa.table(table, schema=schema)).limit(1)
        with connection_errors(url), engine.connect() as conn:
            if conn.execute(probe).first() is None:
                raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
        return source
    finally:
        engine.dispose()


def _is_numeric_or_unknown(column_type: Any, dialect: str) -> bool:
    # Float is not a Numeric subclass in SQLAlchemy 2.1, nor is PostgreSQL's money: name them all.
    if isinstance(column_type, sqltypes.Integer | sqltypes.Numeric | sqltypes.Float | postgresql.MONEY):
        return True
    # SQLite views report no type; rows whose value is not a number are rejected one by one.
    return dialect == "sqlite" and isinstance(column_type, sqltypes.NullType)


def covering_index_name(settings: SegmentSettings) -> str:
    """The covering index's name, in the source table's schema."""
    _, table = split_table_name(settings.source_table)
    return f"{table[:40]}_segments_covering_idx"


def covering_index_columns(settings: SegmentSettings) -> list[str]:
    """The covering index's columns, in key order: customer id, order id (if mapped), occurred at, then
    the amount or quantity and unit price."""
    columns = [settings.customer_id_column]
    if settings.order_id_column:
        columns.append(settings.order_id_column)
    columns.append(settings.occurred_at_column)
    if settings.uses_quantity_times_price:
        assert settings.quantity_column and settings.unit_price_column
        columns += [settings.quantity_column, settings.unit_price_column]
    else:
        assert settings.amount_column
        columns.append(settings.amount_column)
    return columns


def covering_index_sql(engine: Engine, settings: SegmentSettings) -> str:
    """``CREATE INDEX CONCURRENTLY`` of the covering index for the configured source (PostgreSQL)."""
    return load_sql(
        "covering_index",
        index_name=quote_identifier(engine, covering_index_name(settings), "index"),
        source_table=quote_table(engine, settings.source_table),
        columns=QuotedIdentifier(
            ", ".join(quote_identifier(engine, column) for column in covering_index_columns(settings))
        ),
    )


@dataclass(frozen=True)
class CoveringIndex:
    """What :func:`create_covering_index` did: ``created``, ``kept`` (it was there, valid, on the
    configured columns) or ``rebuilt`` (dropped and built again, for ``reason``)."""

    statement: str
    action: Literal["created", "kept", "rebuilt"]
    reason: str | None = None


def covering_index_lock_key(settings: SegmentSettings) -> int:
    """The advisory lock a build of the source's covering index holds."""
    return lock_key(settings, f"covering-index:{settings.source_table}")


def create_covering_index(settings: SegmentSettings) -> CoveringIndex:
    """Create the covering index (outside a transaction, as CONCURRENTLY requires), then VACUUM ANALYZE
    the source so that index-only scans need no heap visits. Needs the source table's owner.

    A concurrent build that failed or was interrupted (cancelled, its connection lost, a deadlock)
    leaves its index behind, invalid: PostgreSQL keeps it up to date but never reads it, and ``IF NOT
    EXISTS`` then builds nothing, so every extract would run without it (at 10M rows about twice as
    long) with no error anywhere. Such an index is dropped (concurrently) and built again, as is an
    index of this name on other columns (the column settings changed since it was built). An index of
    this name on another table is left alone: that is an error. One build at a time per source: two
    concurrent builds of the same index deadlocked each other here, so a second stops at once, naming
    the first."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        inspect_source(engine, settings)
        statement = covering_index_sql(engine, settings)
        schema, _ = split_table_name(settings.source_table)
        name = covering_index_name(settings)
        source_table = quote_table(engine, settings.source_table)
        columns = covering_index_columns(settings)

        def busy(who: str) -> SegmentsError:
            return IndexBuildInProgressError(
                f"another `segments index --create` is building the index on {settings.source_table}{who}; "
                "wait for it to finish"
            )

        with (
            advisory_lock(settings, covering_index_lock_key(settings), busy),
            connection_errors(url),
            engine.connect() as conn,
        ):
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            params = {"source_table": str(source_table), "index_name": name}
            existing = conn.execute(text(load_sql("covering_index_state")), params).one_or_none()
            built = CoveringIndex(statement, "created")
            if existing is not None:
                if not existing.on_source:
                    raise ConfigurationError(
                        f"an index named {existing.index_name} is on {existing.table_name}, not on the source "
                        f"{settings.source_table}; rename or drop it, then create the covering index"
                    )
                if existing.building_pid is not None:
                    raise IndexBuildInProgressError(
                        f"index {existing.index_name} is being built by server process {existing.building_pid}; "
                        "wait for it to finish"
                    )
                if existing.usable and existing.plain and list(existing.columns) == columns:
                    built = CoveringIndex(statement, "kept")
                else:
                    if not existing.usable:
                        reason = "an earlier build failed or was interrupted and left it invalid"
                    elif list(existing.columns) != columns:
                        reason = f"it was on ({', '.join(existing.columns)}), not ({', '.join(columns)})"
                    else:
                        reason = "it was unique, partial or on expressions"
                    conn.exec_driver_sql(f"drop index concurrently {quote_table(engine, name, schema)}")
                    built = CoveringIndex(statement, "rebuilt", reason)
            if built.action != "kept":
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"vacuum analyze {source_table}")
        return built
    finally:
        engine.dispose()


def render_feature_query(
    engine: Engine,
    settings: SegmentSettings,
    source: SourceColumns,
    one_customer: bool = False,
    lower_bound: bool = False,
    upper_bound: bool = False,
) -> str:
    """The feature query for the settings' dialect with the mapped identifiers quoted in; with
    ``lower_bound`` / ``upper_bound`` (PostgreSQL), only the customer ids at or above ``:lower_bound``
    / below ``:upper_bound`` (a partition)."""
    return _render("customer_features", engine, settings, source, one_customer, (lower_bound, upper_bound))


def render_count_query(
    engine: Engine, settings: SegmentSettings, source: SourceColumns, one_customer: bool = False
) -> str:
    """The query counting the rows scanned, in the window and rejected by reason."""
    return _render("source_row_counts", engine, settings, source, one_customer, counting=True)


def _render(
    template: str,
    engine: Engine,
    settings: SegmentSettings,
    source: SourceColumns,
    one_customer: bool,
    bounds: tuple[bool, bool] = (False, False),
    counting: bool = False,
) -> str:
    def column(name: str | None) -> QuotedIdentifier | None:
        return quote_identifier(engine, name, "column") if name else None

    use_quantity = settings.uses_quantity_times_price
    return load_sql(
        template,
        settings.dialect,
        source_table=quote_table(engine, settings.source_table),
        customer_id=column(settings.customer_id_column),
        occurred_at=column(settings.occurred_at_column),
        amount=None if use_quantity else column(settings.amount_column),
        quantity=column(settings.quantity_column) if use_quantity else None,
        unit_price=column(settings.unit_price_column) if use_quantity else None,
        order_id=column(settings.order_id_column),
        lookback=settings.lookback_days is not None,
        one_customer=one_customer,
        lower_bound=bounds[0],
        upper_bound=bounds[1],
        time_type=SqlKeyword(source.time_type or "timestamptz"),
        cast_occurred_at=source.time_type is None,
        amount_is_null=counting,
    )


def query_parameters(settings: SegmentSettings, as_of: date, source: SourceColumns) -> dict[str, Any]:
    """Bound parameters of the feature and count queries: the as-of instant and the window start,
    as UTC wall times for a ``timestamp`` column (the queries read times as UTC)."""
    start = as_of_start(as_of)
    if source.time_type == "timestamp":
        start = start.replace(tzinfo=None)
    window_start = start - timedelta(days=settings.lookback_days) if settings.lookback_days else None
    if settings.dialect == "sqlite":
        params: dict[str, Any] = {"as_of": start.strftime("%Y-%m-%d %H:%M:%S")}
        if window_start is not None:
            params["window_start"] = window_start.strftime("%Y-%m-%d %H:%M:%S")
        return params
    params = {"as_of_ts": start}
    if window_start is not None:
        params["window_start_ts"] = window_start
    return params


def extract_customer_features(settings: SegmentSettings, as_of: date, customer_id: str | None = None) -> ExtractResult:
    """Compute per-customer features as of ``as_of`` in the database and fetch them in chunks.

    Returns one row per customer that has at least one accepted row in the window, with the columns
    ``customer_id``, ``recency_days`` / ``tenure_days`` (whole days, null when ``frequency`` is 0),
    ``frequency`` (orders with net amount > 0), ``monetary`` (net spend, refunds included, in the
    source's currency) and ``avg_order_value`` (``monetary / frequency``), and the row counts.
    Raises :class:`EmptySourceError` when the source or the window holds no usable row. With
    ``customer_id``, only that customer's rows are read (one index lookup where the source has an
    index on the customer id column).
    """
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        source = inspect_source(engine, settings)
        one_customer = customer_id is not None
        feature_sql = render_feature_query(engine, settings, source, one_customer=one_customer)
        count_sql = render_count_query(engine, settings, source, one_customer=one_customer)
        params = query_parameters(settings, as_of, source)
        if customer_id is not None:
            params["customer_id"] = _customer_id_value(customer_id, source.customer_id_is_integer)
        chunks: list[pd.DataFrame] = []
        with connection_errors(url), engine.connect() as conn:
            if settings.dialect == "postgresql" and one_customer:
                prepare_extract_session(conn)
                totals = {
                    key: int(value) for key, value in conn.execute(text(count_sql), params).mappings().one().items()
                }
                chunks.append(fetch_with_copy(conn, feature_sql, params))
            elif settings.dialect == "postgresql":
                prepare_extract_session(conn)
                # The counts run beside the aggregation on a second connection that reads the same
                # snapshot (exported by this transaction): on two cores the count pass costs no time.
                snapshot = conn.execute(text("select pg_export_snapshot()")).scalar_one()
                with ThreadPoolExecutor(max_workers=1) as pool:
                    counting = pool.submit(count_in_snapshot, engine, snapshot, count_sql, params)
                    chunks.append(fetch_with_copy(conn, feature_sql, params))
                    totals = counting.result()
            else:
                counted = conn.execute(text(count_sql), params).mappings().one()
                totals = {key: int(value) for key, value in counted.items()}
                result = conn.execution_options(stream_results=True, yield_per=FETCH_CHUNK_ROWS).execute(
                    text(feature_sql), params
                )
                columns = list(result.keys())
                for partition in result.partitions(FETCH_CHUNK_ROWS):
                    chunks.append(pd.DataFrame.from_records([tuple(row) for row in partition], columns=columns))
            conn.rollback()
    finally:
        engine.dispose()

    counts = row_counts(totals)
    if customer_id is not None and counts.rows_in_window == 0:
        raise EmptySourceError(
            f"customer {customer_id!r} has no usable rows before as-of {as_of.isoformat()} in {settings.source_table!r}"
        )
    if counts.rows_scanned == 0:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
    features, customer_id_is_integer = typed_features(
        chunks, source.customer_id_is_integer, source.customer_id_is_number
    )
    if features.empty:
        window = f"in the {settings.lookback_days} days " if settings.lookback_days else ""
        raise EmptySourceError(
            f"no usable rows {window}before as-of {as_of.isoformat()} in {settings.source_table!r} "
            f"({counts.rows_scanned} scanned, {counts.rows_rejected} rejected: "
            f"{_reasons_text(counts.rejected_by_reason)})"
        )
    return ExtractResult(
        features=features,
        row_counts=counts,
        as_of=as_of,
        customer_id_is_integer=customer_id_is_integer,
    )


def prepare_extract_session(conn: Connection) -> None:
    """PostgreSQL session settings of the extract transaction (also used by the scale benchmark).

    One snapshot for every query (REPEATABLE READ), times read as UTC, and the planner costing random
    reads as on SSD storage (``random_page_cost`` 1.1 instead of 4, which dates from spinning disks):
    with the covering index of the README, the planner then streams the order- and customer-level
    aggregation from an index-only scan in key order (5-6 s at 10M rows here) instead of hashing
    5.4M orders to disk (14-16 s). Without that index nothing changes: the plan is a sequential scan.
    """
    conn.execution_options(isolation_level="REPEATABLE READ")
    set_extract_options(conn)


def set_extract_options(conn: Connection) -> None:
    """The extract's planner and time settings, local to the transaction (see
    :func:`prepare_extract_session`; partitions call it after adopting the shared snapshot)."""
    conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
    conn.execute(text("SET LOCAL random_page_cost = 1.1"))
    # the rows are fetched through a cursor: plan for all of them, not the first 10%
    conn.execute(text("SET LOCAL cursor_tuple_fraction = 1.0"))
    # JIT compiling the aggregation's expressions cost more than it saved: 10.7 s with it, 9.9 s
    # without, at 10M rows here (a no-op where the server has no JIT)
    conn.execute(text("SET LOCAL jit = off"))


def count_in_snapshot(
    engine: Engine, snapshot: str, sql: str, params: dict[str, Any], adopted: threading.Event | None = None
) -> dict[str, int]:
    """The row counts, read on a connection of its own in the snapshot exported by the extract.
    ``adopted`` is set once this transaction holds the snapshot (the exporter may then end)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ")
        # must be the transaction's first statement
        conn.exec_driver_sql("SET TRANSACTION SNAPSHOT " + snapshot_literal(snapshot))
        if adopted is not None:
            adopted.set()
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        # one core for the counts, the other for the aggregation: parallel workers here only made the
        # two queries fight over two cores
        conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        counted = conn.execute(text(sql), params).mappings().one()
        conn.rollback()
    return {key: int(value) for key, value in counted.items()}


def snapshot_literal(snapshot: str) -> str:
    # pg_export_snapshot() returns e.g. 00000003-0000001B-1; SET TRANSACTION SNAPSHOT takes no parameter
    if not re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{8}-[0-9]+", snapshot):
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    return f"'{snapshot}'"


def fetch_with_copy(conn: Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """Run ``sql`` on PostgreSQL and read its rows with ``COPY ... TO STDOUT`` as CSV, parsed by Arrow's
    multi-threaded reader: at 877k customers much faster than building Python tuples from a cursor.
    NULL is written as ``\\N`` so that an empty text is not mistaken for a missing value."""
    compiled = str(text(sql).compile(dialect=conn.dialect))  # the driver's %(name)s placeholders
    statement = psql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER, NULL '\\N')").format(psql.SQL(compiled))
    buffer = io.BytesIO()
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    cursor = driver_connection.cursor()
    with cursor, cursor.copy(statement, params):
        receive_copy_rows(driver_connection.pgconn, buffer.write, driver_connection.info.encoding)
    table = pacsv.read_csv(
        pa.BufferReader(buffer.getbuffer()),  # no copy; the parsed table does not keep the text
        convert_options=pacsv.ConvertOptions(
            null_values=["\\N"], strings_can_be_null=True, column_types={"customer_id": pa.string()}
        ),
    )
    del buffer
    # column by column, freeing each Arrow column once converted: the table and the frame never both
    # hold every column (the extract's peak memory at 877k customers fell by ~100 MB)
    return table.to_pandas(self_destruct=True, split_blocks=True)


def receive_copy_rows(pgconn: PGconn, write: Callable[[memoryview], object], encoding: str) -> None:
    """Hand every row of a ``COPY ... TO STDOUT`` that psycopg started to ``write``, then collect the
    statement's result, raising its error (a failed query ends its rows early).

    The server sends one message per row, and psycopg's ``Copy.read()`` runs a generator and a wait
    for each: for 877k rows 1.2-1.6 s of a core, the core the aggregation needs. Here each row libpq
    has already received is taken at once (``PQgetCopyData``, not waiting), 0.4 s in all, and the
    socket is waited on only when none is there, as psycopg itself waits (the GIL is released).
    """
    socket = pgconn.socket
    while True:
        size, row = pgconn.get_copy_data(1)
        if size > 0:
            write(row)
        elif size == 0:  # nothing received yet
            select.select([socket], [], [])
            pgconn.consume_input()
        else:  # -1: the rows are done
            break
    error: psycopg.Error | None = None
    while True:
        while pgconn.is_busy():
            select.select([socket], [], [])
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = psycopg.errors.error_from_result(result, encoding=encoding)
    if error is not None:
        raise error


def _customer_id_value(customer_id: str, is_integer: bool) -> str | int:
    if not is_integer:
        return customer_id
    try:
        return int(customer_id)
    except ValueError:
        raise SourceError(f"customer id {customer_id!r} is not an integer, as the source's ids are") from None


def row_counts(totals: dict[str, int]) -> RowCounts:
    named = {_COUNT_COLUMNS[key]: value for key, value in totals.items()}
    return RowCounts(
        rows_scanned=named.get("rows_scanned", 0),
        rows_in_window=named.get("rows_in_window", 0),
        rows_before_window=named.get("rows_before_window", 0),
        rejected_by_reason={reason: named.get(reason, 0) for reason in REJECTION_REASONS},
    )


def _reasons_text(rejected: dict[str, int]) -> str:
    parts = [f"{reason} {count}" for reason, count in rejected.items() if count]
    return ", ".join(parts) or "none"


def typed_features(
    chunks: list[pd.DataFrame], customer_id_is_integer: bool, customer_id_is_number: bool
) -> tuple[pd.DataFrame, bool]:
    """The fetched rows with their final dtypes and the average order value (``monetary /
    frequency``, which the queries leave out), and whether customer ids are integers.

    Ids stored as floats or decimals (as pandas exports an integer column with gaps, e.g. 17850.0)
    are integers when every value is whole; other ids are text.
    """
    empty = pd.DataFrame(columns=["customer_id", *FEATURE_COLUMNS])
    frame = pd.concat(chunks, ignore_index=True) if chunks else empty
    ids = frame["customer_id"]
    if customer_id_is_integer:
        frame["customer_id"] = pd.to_numeric(ids).astype("int64")
    elif customer_id_is_number and len(ids):
        numeric_ids = pd.to_numeric(ids).astype("float64")
        customer_id_is_integer = bool((numeric_ids % 1 == 0).all() and numeric_ids.abs().max() < 2**53)
        frame["customer_id"] = numeric_ids.astype("int64") if customer_id_is_integer else ids.astype("string")
    else:
        frame["customer_id"] = ids.astype("string")
    frame["frequency"] = frame["frequency"].astype("int64")
    for name in ("recency_days", "tenure_days"):
        frame[name] = frame[name].astype("Int64")
    frame["monetary"] = pd.to_numeric(frame["monetary"], errors="raise").astype("float64")
    # divided here, not in the query: a numeric division in the database cost more than the whole
    # typing (see customer_features.postgresql.sql); no orders, no average
    frame["avg_order_value"] = frame["monetary"] / frame["frequency"].where(frame["frequency"] > 0)
    frame = frame[["customer_id", *FEATURE_COLUMNS]]
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True), customer_id_is_integer
