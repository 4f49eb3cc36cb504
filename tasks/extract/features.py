"""Per-customer features computed where the transactions are, and the row counts of the run record.

Raw transaction rows never leave the source's engine: the feature query aggregates them to one row per
customer, the count query counts what was scanned and rejected; both read one snapshot.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from tasks.errors import EmptySourceError
from tasks.extract.engines import SourceSession, open_source
from tasks.extract.queries import customer_id_value, query_parameters, render_count_query, render_feature_query
from tasks.extract.result import REJECTION_REASONS, ExtractResult, RowCounts, as_of_start, epoch_microseconds
from tasks.extract.source import inspect_source, integer_ids
from tasks.settings import COMPUTED_FEATURES, SegmentSettings

_COUNT_COLUMNS = {
    "scanned_row_count": "rows_scanned",
    "window_row_count": "rows_in_window",
    "before_window_count": "rows_before_window",
    "guest_row_count": "guest_rows",
    "null_occurred_at_count": "null_occurred_at",
    "after_as_of_count": "occurred_at_or_after_as_of",
    "non_numeric_amount_count": "non_numeric_amount",
}


def extract_customer_features(settings: SegmentSettings, as_of: date, customer_id: str | None = None) -> ExtractResult:
    """Compute per-customer features as of ``as_of`` where the transactions are, and the row counts.

    Returns one row per customer that has at least one accepted row in the window, with the columns
    ``customer_id``, ``recency_days`` / ``tenure_days`` (whole days, null when ``frequency`` is 0),
    ``frequency`` (orders with net amount > 0), ``monetary`` (net spend, refunds included, in the
    source's currency) and ``avg_order_value`` (``monetary / frequency``). Raises
    :class:`EmptySourceError` when the source or the window holds no usable row. With
    ``customer_id``, only that customer's rows are read (one index lookup where the source has an
    index on the customer id column).
    """
    one_customer = customer_id is not None
    with open_source(settings) as session:
        source = inspect_source(session, settings)
        params = query_parameters(settings, as_of, session, source)
        if customer_id is not None:
            params["customer_id"] = customer_id_value(customer_id, source.customer_id_is_integer)
        counts = count_rows(session, render_count_query(session, settings, source, one_customer=one_customer), params)
        rows = session.read(render_feature_query(session, settings, source, one_customer=one_customer), params)

    if customer_id is not None and counts.rows_in_window == 0:
        raise EmptySourceError(
            f"customer {customer_id!r} has no usable rows before as-of {as_of.isoformat()} in {settings.source_table!r}"
        )
    if counts.rows_scanned == 0:
        raise EmptySourceError(f"source {settings.source_table!r} has no rows; nothing to segment")
    features = features_at(typed_customer_rows(rows, source.customer_id_is_integer, settings.source_table), as_of)
    if features.empty:
        window = f"in the {settings.lookback_days} days " if settings.lookback_days else ""
        raise EmptySourceError(
            f"no usable rows {window}before as-of {as_of.isoformat()} in {settings.source_table!r} "
            f"({counts.rows_scanned} scanned, {counts.rows_rejected} rejected: "
            f"{_reasons_text(counts.rejected_by_reason)})"
        )
    return ExtractResult(
        features=features, counts=counts, as_of=as_of, customer_id_is_integer=source.customer_id_is_integer
    )


def count_rows(session: SourceSession, sql: str, params: dict[str, Any]) -> RowCounts:
    """Run the count query: rows scanned, in the window, and rejected by reason."""
    totals = {str(key): value for key, value in session.read(sql, params).iloc[0].items()}
    guest_net_amount = round(float(totals.pop("guest_net_amount") or 0), 2)
    named = {_COUNT_COLUMNS[key]: int(value) for key, value in totals.items()}
    return RowCounts(
        rows_scanned=named.get("rows_scanned", 0),
        rows_in_window=named.get("rows_in_window", 0),
        rows_before_window=named.get("rows_before_window", 0),
        rejected_by_reason={reason: named.get(reason, 0) for reason in REJECTION_REASONS},
        guest_rows=named.get("guest_rows", 0),
        guest_net_amount=guest_net_amount,
    )


def _reasons_text(rejected: dict[str, int]) -> str:
    parts = [f"{reason} {count}" for reason, count in rejected.items() if count]
    return ", ".join(parts) or "none"


#: What the feature query returns per customer: the running aggregates an incremental night keeps as
#: state. Times are epoch microseconds; monetary is the database's exact text on PostgreSQL.
CUSTOMER_ROW_COLUMNS = [
    "customer_id",
    "frequency",
    "monetary",
    "last_order_us",
    "first_order_us",
    "window_rows",
    "earliest_row_us",
    "pending_from_us",
]
_MICROSECOND_COLUMNS = ("last_order_us", "first_order_us", "earliest_row_us", "pending_from_us")
DAY_MICROSECONDS = 86_400_000_000


def typed_customer_rows(rows: pd.DataFrame, customer_id_is_integer: bool, table: str) -> pd.DataFrame:
    """The feature query's rows with their final dtypes: ids int64 when the source's id column holds
    numbers (see :func:`tasks.extract.source.integer_ids`), text otherwise; counts and times as
    (nullable) integers; monetary as read."""
    frame = rows[[column for column in CUSTOMER_ROW_COLUMNS if column in rows]].copy()
    frame["customer_id"] = typed_ids(frame["customer_id"], customer_id_is_integer, table)
    frame["frequency"] = frame["frequency"].astype("int64")
    for name in ("window_rows", *_MICROSECOND_COLUMNS):
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


def typed_ids(ids: pd.Series, customer_id_is_integer: bool, table: str) -> pd.Series:
    """Customer ids as the outputs keep them: int64 for a number column, text otherwise."""
    return integer_ids(ids, table) if customer_id_is_integer else ids.astype("string")


def features_at(rows: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Per-customer features as of ``as_of`` from the customer rows: the customers with rows in the
    window, ``recency_days`` / ``tenure_days`` as whole days from the last / first order to as-of 00:00
    UTC (null without an order), and the average order value (``monetary / frequency``), sorted by
    customer id. The one place these definitions meet the data, for full and incremental runs."""
    if "window_rows" in rows:
        rows = rows[rows["window_rows"] > 0]
    as_of_us = epoch_microseconds(as_of_start(as_of))
    frame = pd.DataFrame(
        {
            "customer_id": rows["customer_id"],
            "recency_days": (as_of_us - rows["last_order_us"].astype("Int64")) // DAY_MICROSECONDS,
            "frequency": rows["frequency"].astype("int64"),
            "monetary": pd.to_numeric(rows["monetary"], errors="raise").astype("float64"),
            "tenure_days": (as_of_us - rows["first_order_us"].astype("Int64")) // DAY_MICROSECONDS,
        }
    )
    # no orders with a positive net, no average
    frame["avg_order_value"] = frame["monetary"] / frame["frequency"].where(frame["frequency"] > 0)
    frame = frame[["customer_id", *COMPUTED_FEATURES]]
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True)
