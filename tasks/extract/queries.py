"""The extract's SQL: the feature and count queries rendered for the configured source, and their bound
parameters. The queries are in ``sql/customer_features.<dialect>.sql`` and
``sql/source_row_counts.<dialect>.sql``."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine

from tasks.database import QuotedIdentifier, SqlKeyword, load_sql, quote_identifier, quote_table
from tasks.errors import SourceError
from tasks.extract.result import as_of_start
from tasks.extract.source import SourceColumns
from tasks.settings import SegmentSettings


def render_feature_query(
    engine: Engine,
    settings: SegmentSettings,
    source: SourceColumns,
    one_customer: bool = False,
    lower_bound: bool = False,
    upper_bound: bool = False,
    changed_customers: QuotedIdentifier | None = None,
) -> str:
    """The feature query for the settings' dialect with the mapped identifiers quoted in; with
    ``lower_bound`` / ``upper_bound`` (PostgreSQL), only the customer ids at or above ``:lower_bound``
    / below ``:upper_bound`` (a partition); with ``changed_customers``, only the customers whose ids
    that table holds (an incremental run). When runs keep state, rows at or after as-of are read too."""
    return _render(
        "customer_features",
        engine,
        settings,
        source,
        one_customer=one_customer,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        changed_customers=changed_customers,
        pending=settings.keeps_state and not one_customer,
    )


def render_count_query(
    engine: Engine,
    settings: SegmentSettings,
    source: SourceColumns,
    one_customer: bool = False,
    changed_since: bool = False,
) -> str:
    """The query counting the rows scanned, in the window and rejected by reason; with
    ``changed_since``, only the rows changed after ``:watermark`` (an incremental run)."""
    return _render(
        "source_row_counts", engine, settings, source, one_customer=one_customer, changed_since=changed_since
    )


def _render(template: str, engine: Engine, settings: SegmentSettings, source: SourceColumns, **flags: Any) -> str:
    def column(name: str | None) -> QuotedIdentifier | None:
        return quote_identifier(engine, name, "column") if name else None

    use_quantity = settings.uses_quantity_times_price
    selections: dict[str, Any] = {
        "one_customer": False,
        "lower_bound": False,
        "upper_bound": False,
        "changed_customers": None,
        "changed_since": False,
        "pending": False,
    }
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
        changed_at=column(settings.changed_at_column),
        changed_type=SqlKeyword(source.changed_at_type or "bigint"),
        lookback=settings.lookback_days is not None,
        time_type=SqlKeyword(source.time_type or "timestamptz"),
        cast_occurred_at=source.time_type is None,
        amount_is_null=template == "source_row_counts",
        **(selections | flags),
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


def customer_id_value(customer_id: str, is_integer: bool) -> str | int:
    if not is_integer:
        return customer_id
    try:
        return int(customer_id)
    except ValueError:
        raise SourceError(f"customer id {customer_id!r} is not an integer, as the source's ids are") from None
