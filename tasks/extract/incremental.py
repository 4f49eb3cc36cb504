"""Incremental nights (PostgreSQL, with a change column): the extract of a run that keeps per-customer
state in ``customer_feature_state``.

The state holds, per customer, what the feature query returns (orders, net spend, first and last order
time, rows in the window, the earliest of them, and the earliest row at or after as-of), as of the last
successful run, whose record holds the watermark: the change column's highest value it saw. A night
then recomputes, from all their rows, only the customers with a row changed above the watermark, with
rows that as-of has now reached, or with a row leaving the lookback window; every other customer's
features come from the state at the new as-of (:func:`tasks.extract.features.features_at`).

A full aggregation runs instead on the first run, after the source, its mapping or the lookback
changed, for an as-of before the state's, every ``SEGMENTS_FULL_REFRESH_DAYS`` and on demand; when the
state was valid it counts the customers it corrects (a deleted source row is caught here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection, text

from tasks.database import SqlKeyword, connection_errors, load_sql, make_engine, quote_identifier, quote_table
from tasks.errors import EmptySourceError
from tasks.extract.features import (
    CUSTOMER_ROW_COLUMNS,
    begin_extract_transaction,
    count_rows,
    features_at,
    read_rows,
    typed_customer_rows,
    typed_ids,
)
from tasks.extract.queries import query_parameters, render_count_query, render_feature_query
from tasks.extract.result import ExtractResult, StateUpdate, as_of_start, epoch_microseconds
from tasks.extract.source import SourceColumns, inspect_source
from tasks.load.runs import RUN_COLUMNS
from tasks.load.schema import OutputTables, output_tables
from tasks.settings import SegmentSettings

CHANGED_CUSTOMERS = "changed_customers"
#: The settings the state depends on: when one changes, the next run aggregates in full.
STATE_SETTINGS = (
    "source_table",
    "customer_id_column",
    "occurred_at_column",
    "amount_column",
    "quantity_column",
    "unit_price_column",
    "order_id_column",
    "changed_at_column",
    "lookback_days",
)


@dataclass(frozen=True)
class PriorState:
    """What the last successful run left: its watermark, the settings its state was built with, its
    as-of date, and when the last full aggregation finished."""

    watermark: str | None
    fingerprint: str | None
    as_of: date
    last_full_at: datetime | None


def state_fingerprint(settings: SegmentSettings) -> str:
    """A digest of the settings the state depends on (:data:`STATE_SETTINGS`)."""
    values = {name: getattr(settings, name) for name in STATE_SETTINGS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def read_prior_state(conn: Connection, tables: OutputTables) -> PriorState | None:
    """The last successful run's state record, or ``None`` before the first (or before the output
    tables knew of state)."""
    if not sa.inspect(conn).has_table("segment_runs", schema=tables.schema_name):
        return None
    present = {column["name"] for column in sa.inspect(conn).get_columns("segment_runs", schema=tables.schema_name)}
    if "watermark" not in present:
        return None
    runs = tables.table("segment_runs", RUN_COLUMNS)
    done = runs.c.status.in_(["succeeded", "superseded"])
    last = conn.execute(
        sa.select(runs.c.watermark, runs.c.state_fingerprint, runs.c.as_of)
        .where(done)
        .order_by(runs.c.finished_at.desc())
        .limit(1)
    ).first()
    if last is None:
        return None
    last_full = conn.execute(
        sa.select(sa.func.max(runs.c.finished_at)).where(done, runs.c.extract_mode == "full")
    ).scalar()
    return PriorState(
        watermark=last.watermark, fingerprint=last.state_fingerprint, as_of=last.as_of, last_full_at=last_full
    )


def state_is_valid(prior: PriorState | None, settings: SegmentSettings, as_of: date) -> str | None:
    """Why the stored state cannot be carried forward to ``as_of`` (``None`` when it can)."""
    if prior is None or prior.watermark is None:
        return "no state from an earlier successful run"
    if prior.fingerprint != state_fingerprint(settings):
        return "the source, its column mapping or the lookback changed since the state was built"
    if as_of < prior.as_of:
        return f"as-of {as_of} is before the state's ({prior.as_of})"
    return None


def choose_mode(
    prior: PriorState | None, settings: SegmentSettings, as_of: date, now: datetime | None = None
) -> tuple[Literal["full", "incremental"], str]:
    """Full aggregation or incremental night, and why. The full refresh is due by the clock, not by
    as-of dates: it is there for what the nights miss over time, however the dates were run."""
    invalid = state_is_valid(prior, settings, as_of)
    if invalid is not None:
        return "full", invalid
    assert prior is not None
    if settings.full_refresh:
        return "full", "full refresh asked for"
    now = now or datetime.now(UTC)
    age = None if prior.last_full_at is None else (now - prior.last_full_at).days
    if age is None or age >= settings.full_refresh_days:
        return "full", (
            f"the last full aggregation finished {age} days ago (SEGMENTS_FULL_REFRESH_DAYS is "
            f"{settings.full_refresh_days})"
        )
    return "incremental", f"rows changed after {prior.watermark}"


def extract_with_state(settings: SegmentSettings, as_of: date) -> ExtractResult:
    """The extract of a run with a change column: an incremental night when the stored state allows
    it, else the full aggregation (counting the customers it corrects when the state was valid); in
    one snapshot, with the state update the write stores."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        source = inspect_source(engine, settings)
        params = query_parameters(settings, as_of, source)
        with connection_errors(url), engine.connect() as conn:
            begin_extract_transaction(conn)
            tables = output_tables(conn, settings)
            state_sql = load_sql("customer_feature_state", state_table=tables.customer_feature_state)
            prior = read_prior_state(conn, tables)
            mode, reason = choose_mode(prior, settings, as_of)
            watermark = conn.execute(text(_max_change_sql(conn, settings))).scalar()
            changed: list[Any] | None = None
            stored = None  # the state of the customers not recomputed tonight
            if prior is not None and state_is_valid(prior, settings, as_of) is None:
                changed = collect_changed_customers(conn, settings, source, tables, prior, as_of)
                stored = read_rows(conn, state_sql, {})
            if mode == "incremental":
                assert prior is not None
                count_sql = render_count_query(conn.engine, settings, source, changed_since=True)
                counts = count_rows(conn, count_sql, params | {"watermark": prior.watermark})
                changed_table = quote_table(conn, CHANGED_CUSTOMERS, "pg_temp")
                feature_sql = render_feature_query(conn.engine, settings, source, changed_customers=changed_table)
            else:
                counts = count_rows(conn, render_count_query(conn.engine, settings, source), params)
                feature_sql = render_feature_query(conn.engine, settings, source)
            recomputed = read_rows(conn, feature_sql, params)
            conn.rollback()
    finally:
        engine.dispose()

    if mode == "full" and counts.rows_scanned == 0:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")

    def typed(frame: pd.DataFrame) -> pd.DataFrame:
        return typed_customer_rows([frame], source.customer_id_is_integer, settings.source_table)

    rows = typed(recomputed)[CUSTOMER_ROW_COLUMNS]
    changed_ids = None
    if changed is not None:
        changed_ids = typed_ids(pd.Series(changed, dtype=object), source.customer_id_is_integer, settings.source_table)
    differences = None
    if mode == "incremental":
        assert stored is not None
        features = features_at(pd.concat([rows, typed(stored)], ignore_index=True), as_of)
    else:
        features = features_at(rows, as_of)
        if stored is not None and changed_ids is not None:
            differences = count_differences(rows[~rows["customer_id"].isin(changed_ids)], typed(stored))
    if features.empty:
        raise EmptySourceError(f"no usable rows before as-of {as_of.isoformat()} in {settings.source_table!r}")
    recomputed_ids = changed_ids.tolist() if mode == "incremental" and changed_ids is not None else None
    state = StateUpdate(
        mode=mode,
        reason=reason,
        rows=rows,
        recomputed_ids=recomputed_ids,
        watermark=str(watermark) if watermark is not None else (prior.watermark if prior else None),
        fingerprint=state_fingerprint(settings),
        customers_recomputed=len(recomputed_ids) if recomputed_ids is not None else len(rows),
        reconciliation_differences=differences,
    )
    return ExtractResult(
        features=features,
        counts=counts,
        as_of=as_of,
        customer_id_is_integer=source.customer_id_is_integer,
        state=state,
    )


def _max_change_sql(conn: Connection, settings: SegmentSettings) -> str:
    assert settings.changed_at_column
    column = quote_identifier(conn, settings.changed_at_column, "column")
    return f"select cast(max({column}) as text) from {quote_table(conn, settings.source_table)}"


def collect_changed_customers(
    conn: Connection,
    settings: SegmentSettings,
    source: SourceColumns,
    tables: OutputTables,
    prior: PriorState,
    as_of: date,
) -> list[Any]:
    """Fill the temporary ``changed_customers`` table (``sql/changed_customers.sql``) and return its ids."""
    assert settings.changed_at_column and source.changed_at_type
    sql = load_sql(
        "changed_customers",
        source_table=quote_table(conn, settings.source_table),
        customer_id=quote_identifier(conn, settings.customer_id_column, "column"),
        changed_at=quote_identifier(conn, settings.changed_at_column, "column"),
        changed_type=SqlKeyword(source.changed_at_type),
        state_table=tables.customer_feature_state,
        lookback=settings.lookback_days is not None,
    )
    start = as_of_start(as_of)
    params: dict[str, Any] = {"watermark": prior.watermark, "as_of_us": epoch_microseconds(start)}
    if settings.lookback_days:
        params["window_start_us"] = epoch_microseconds(start - timedelta(days=settings.lookback_days))
    conn.execute(text(sql), params)
    # the planner needs the table's size to look the customers up through the source's index
    conn.exec_driver_sql(f"analyze pg_temp.{CHANGED_CUSTOMERS}")
    return [row[0] for row in conn.exec_driver_sql(f"select customer_id from pg_temp.{CHANGED_CUSTOMERS}")]


def count_differences(full: pd.DataFrame, stored: pd.DataFrame) -> int:
    """Customers whose stored state differs from the full aggregation's, or who are in only one of
    them: what the incremental nights got wrong (both frames hold the customers not recomputed)."""
    merged = full.merge(stored, on="customer_id", how="outer", suffixes=("", "_stored"), indicator=True)
    differs = merged["_merge"] != "both"
    for column in CUSTOMER_ROW_COLUMNS[1:]:
        mine, theirs = merged[column], merged[f"{column}_stored"]
        if column == "monetary":
            mine, theirs = pd.to_numeric(mine), pd.to_numeric(theirs)
        same = (mine == theirs).fillna(False).astype(bool) | (mine.isna() & theirs.isna())
        differs |= ~same
    return int(differs.sum())
