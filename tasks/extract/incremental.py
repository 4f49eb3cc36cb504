"""Incremental nights (a PostgreSQL, DuckDB or Spark source with a change column): the extract of a run
that keeps per-customer state in ``customer_feature_state`` of the output database.

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
from datetime import UTC, date, datetime
from typing import Literal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection, text

from tasks.database import connection_errors, make_engine, read_with_copy
from tasks.errors import EmptySourceError
from tasks.extract.engines import open_source
from tasks.extract.features import (
    CUSTOMER_ROW_COLUMNS,
    DAY_MICROSECONDS,
    count_rows,
    features_at,
    typed_customer_rows,
    typed_ids,
)
from tasks.extract.queries import query_parameters, render_change_query, render_count_query, render_feature_query
from tasks.extract.result import ExtractResult, StateUpdate, as_of_start, epoch_microseconds
from tasks.extract.source import inspect_source
from tasks.load.runs import RUN_COLUMNS
from tasks.load.schema import OutputTables, output_tables
from tasks.settings import SegmentSettings

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
    if settings.source_url:  # a source apart from the outputs (no password: the masked URL)
        values["source"] = settings.masked_source_url()
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
    it, else the full aggregation (counting the customers it corrects when the state was valid), in
    one snapshot of the source, with the state update the write stores."""
    prior, stored, due = read_stored_state(settings, as_of)
    mode, reason = choose_mode(prior, settings, as_of)
    with open_source(settings) as session:
        source = inspect_source(session, settings)
        params = query_parameters(settings, as_of, session, source)

        def typed(frame: pd.DataFrame) -> pd.DataFrame:
            return typed_customer_rows(frame, source.customer_id_is_integer, settings.source_table)

        def ids(values: pd.Series) -> pd.Series:
            return typed_ids(values, source.customer_id_is_integer, settings.source_table)

        found = session.read(render_change_query(session, settings, source, "source_watermark"), {})["watermark"]
        watermark = None if found.isna().all() else str(found.iloc[0])
        changed_ids = None
        if stored is not None:
            assert prior is not None
            since = session.read(
                render_change_query(session, settings, source, "changed_customers"), {"watermark": prior.watermark}
            )
            changed_ids = pd.concat([ids(since["customer_id"]), ids(due)], ignore_index=True).drop_duplicates()
        if mode == "incremental":
            assert prior is not None and changed_ids is not None
            count_sql = render_count_query(session, settings, source, changed_since=True)
            counts = count_rows(session, count_sql, params | {"watermark": prior.watermark})
            changed_table = session.customer_ids_table(changed_ids)
            feature_sql = render_feature_query(session, settings, source, changed_customers=changed_table)
        else:
            counts = count_rows(session, render_count_query(session, settings, source), params)
            feature_sql = render_feature_query(session, settings, source)
        rows = typed(session.read(feature_sql, params))[CUSTOMER_ROW_COLUMNS]

    if mode == "full" and counts.rows_scanned == 0:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
    differences = None
    if stored is not None:
        assert changed_ids is not None
        stored = typed(stored)
        stored = stored[~stored["customer_id"].isin(changed_ids)]
    if mode == "incremental":
        assert stored is not None
        features = features_at(pd.concat([rows, stored], ignore_index=True), as_of)
    else:
        features = features_at(rows, as_of)
        if stored is not None and changed_ids is not None:
            differences = count_differences(rows[~rows["customer_id"].isin(changed_ids)], stored)
    if features.empty:
        raise EmptySourceError(f"no usable rows before as-of {as_of.isoformat()} in {settings.source_table!r}")
    recomputed_ids = changed_ids.tolist() if mode == "incremental" and changed_ids is not None else None
    state = StateUpdate(
        mode=mode,
        reason=reason,
        rows=rows,
        recomputed_ids=recomputed_ids,
        watermark=watermark if watermark is not None else (prior.watermark if prior else None),
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


def read_stored_state(
    settings: SegmentSettings, as_of: date
) -> tuple[PriorState | None, pd.DataFrame | None, pd.Series]:
    """From the output database: the last successful run's state record and, when the state can be
    carried to ``as_of``, the stored per-customer state and the customers it says are due (rows that
    as-of now reaches, or, with a lookback, rows leaving the window)."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            tables = output_tables(conn, settings)
            prior = read_prior_state(conn, tables)
            if state_is_valid(prior, settings, as_of) is not None:
                return prior, None, pd.Series([], dtype=object)
            state_sql = f"select {', '.join(CUSTOMER_ROW_COLUMNS)} from {tables.customer_feature_state}"
            if conn.dialect.name == "postgresql":
                stored = read_with_copy(conn, state_sql, {})
            else:
                stored = pd.read_sql_query(text(state_sql), conn)
    finally:
        engine.dispose()
    start_us = epoch_microseconds(as_of_start(as_of))
    due = stored["pending_from_us"].astype("Int64") < start_us
    if settings.lookback_days:
        window_start_us = start_us - settings.lookback_days * DAY_MICROSECONDS
        due |= stored["earliest_row_us"].astype("Int64") < window_start_us
    return prior, stored, stored.loc[due.fillna(False).astype(bool), "customer_id"]


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
