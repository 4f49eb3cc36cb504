"""The covering index of the source (PostgreSQL): `segments index` prints it, `--create` builds it.

With an index on (customer id, order id, occurred at, amount), PostgreSQL streams the order- and
customer-level aggregation from an index-only scan in key order, with no sort and no hash spilling to
disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, text

from tasks.database import QuotedIdentifier, connection_errors, load_sql, make_engine, quote_identifier, quote_table
from tasks.errors import ConfigurationError, IndexBuildInProgressError, SegmentsError
from tasks.extract.engines import open_source
from tasks.extract.source import inspect_source
from tasks.locking import advisory_lock, lock_key
from tasks.settings import SegmentSettings, split_table_name


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


def change_index_name(settings: SegmentSettings) -> str:
    """The name of the index on the change column (incremental nights find the night's rows by it)."""
    _, table = split_table_name(settings.source_table)
    return f"{table[:40]}_segments_changed_idx"


def source_indexes(settings: SegmentSettings) -> list[tuple[str, list[str]]]:
    """The indexes the job reads the source by, as (name, columns): the covering index, and with a
    change column an index on it."""
    indexes = [(covering_index_name(settings), covering_index_columns(settings))]
    if settings.changed_at_column:
        indexes.append((change_index_name(settings), [settings.changed_at_column]))
    return indexes


def index_sql(engine: Engine, settings: SegmentSettings, name: str, columns: list[str]) -> str:
    """``CREATE INDEX CONCURRENTLY`` of an index of the configured source (PostgreSQL), with the
    comment that says what it is for."""
    return load_sql(
        "change_index" if name == change_index_name(settings) else "covering_index",
        index_name=quote_identifier(engine, name, "index"),
        source_table=quote_table(engine, settings.source_table),
        columns=QuotedIdentifier(", ".join(quote_identifier(engine, column) for column in columns)),
    )


def postgres_source(settings: SegmentSettings) -> None:
    """Indexes are PostgreSQL's: other engines have nothing to build."""
    if settings.source_engine != "postgresql":
        raise ConfigurationError(
            f"the source is read by {settings.source_engine}, whose files or tables need no index from this job; "
            f"`segments index` is for a PostgreSQL source ({settings.source_setting})"
        )


def covering_index_statement(settings: SegmentSettings) -> str:
    """The ``CREATE INDEX`` statements of the source's indexes, as `segments index` prints them."""
    postgres_source(settings)
    engine = make_engine(settings.source)
    try:
        return "\n".join(index_sql(engine, settings, name, columns) for name, columns in source_indexes(settings))
    finally:
        engine.dispose()


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


def create_source_indexes(settings: SegmentSettings) -> list[CoveringIndex]:
    """Create every index of :func:`source_indexes` (see :func:`create_covering_index`)."""
    return [create_covering_index(settings, name, columns) for name, columns in source_indexes(settings)]


def create_covering_index(
    settings: SegmentSettings, name: str | None = None, columns: list[str] | None = None
) -> CoveringIndex:
    """Create the covering index, or the index ``name`` on ``columns`` (outside a transaction, as
    CONCURRENTLY requires), then VACUUM ANALYZE the source so that index-only scans need no heap
    visits. Needs the source table's owner.

    A concurrent build that failed or was interrupted (cancelled, its connection lost, a deadlock)
    leaves its index behind, invalid: PostgreSQL keeps it up to date but never reads it, and ``IF NOT
    EXISTS`` then builds nothing, so every extract would run without it, slower, with no error
    anywhere. Such an index is dropped (concurrently) and built again, as is an
    index of this name on other columns (the column settings changed since it was built). An index of
    this name on another table is left alone: that is an error. One build at a time per source: two
    concurrent builds of the same index deadlock each other, so a second stops at once, naming the
    first."""
    postgres_source(settings)
    url = settings.source
    with open_source(settings) as session:
        inspect_source(session, settings)
    engine = make_engine(url)
    try:
        name = name or covering_index_name(settings)
        columns = columns or covering_index_columns(settings)
        statement = index_sql(engine, settings, name, columns)
        schema, _ = split_table_name(settings.source_table)
        source_table = quote_table(engine, settings.source_table)

        def busy(who: str) -> SegmentsError:
            return IndexBuildInProgressError(
                f"another `segments index --create` is building the index on {settings.source_table}{who}; "
                "wait for it to finish"
            )

        with (
            advisory_lock(settings, covering_index_lock_key(settings), busy),
            connection_errors(url, settings.source_setting),
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
