"""The extract's SQL: the feature, count and change queries rendered for the source's engine, and their
bound parameters. The queries are written once, in ``sql/customer_features.sql``,
``sql/source_row_counts.sql``, ``sql/changed_customers.sql`` and ``sql/source_watermark.sql``; what
the engines write differently is in :mod:`tasks.extract.dialects`."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from tasks.database import QuotedIdentifier, SqlFragment, load_sql
from tasks.errors import SourceError
from tasks.extract.engines import SourceSession
from tasks.extract.result import as_of_start
from tasks.extract.source import SourceColumns
from tasks.settings import SegmentSettings


def render_feature_query(
    session: SourceSession,
    settings: SegmentSettings,
    source: SourceColumns,
    one_customer: bool = False,
    changed_customers: str | None = None,
) -> str:
    """The feature query with the mapped identifiers quoted in; with ``changed_customers`` (a table
    of ids in the session), only those customers (an incremental run). When runs keep state, rows at
    or after as-of are read too."""
    return _render(
        "customer_features",
        session,
        settings,
        source,
        one_customer=one_customer,
        changed_customers=SqlFragment(changed_customers) if changed_customers else None,
        pending=settings.keeps_state and not one_customer,
    )


def render_count_query(
    session: SourceSession,
    settings: SegmentSettings,
    source: SourceColumns,
    one_customer: bool = False,
    changed_since: bool = False,
) -> str:
    """The query counting the rows scanned, in the window and rejected by reason; with
    ``changed_since``, only the rows changed after ``:watermark`` (an incremental run)."""
    return _render(
        "source_row_counts", session, settings, source, one_customer=one_customer, changed_since=changed_since
    )


def render_change_query(session: SourceSession, settings: SegmentSettings, source: SourceColumns, name: str) -> str:
    """``changed_customers`` (the ids with a row changed after ``:watermark``) or ``source_watermark``."""
    return _render(name, session, settings, source)


def _render(
    template: str, session: SourceSession, settings: SegmentSettings, source: SourceColumns, **flags: Any
) -> str:
    def column(name: str | None) -> QuotedIdentifier | None:
        return session.quote(name) if name else None

    use_quantity = settings.uses_quantity_times_price
    selections: dict[str, Any] = {
        "one_customer": False,
        "changed_customers": None,
        "changed_since": False,
        "pending": False,
    }
    return load_sql(
        template,
        engine=source.dialect(session.engine),
        source=SqlFragment(session.relation),
        customer_id=column(settings.customer_id_column),
        occurred_at=column(settings.occurred_at_column),
        amount=None if use_quantity else column(settings.amount_column),
        quantity=column(settings.quantity_column) if use_quantity else None,
        unit_price=column(settings.unit_price_column) if use_quantity else None,
        order_id=column(settings.order_id_column),
        changed_at=column(settings.changed_at_column),
        lookback=settings.lookback_days is not None,
        amount_is_null=template == "source_row_counts",
        **(selections | flags),
    )


def query_parameters(
    settings: SegmentSettings, as_of: date, session: SourceSession, source: SourceColumns
) -> dict[str, Any]:
    """Bound parameters of the feature and count queries: the as-of instant and the window start, in
    the engine's terms (:meth:`tasks.extract.dialects.SourceDialect.time_value`)."""
    dialect = source.dialect(session.engine)
    start = as_of_start(as_of)
    params = {"as_of": dialect.time_value(start)}
    if settings.lookback_days:
        params["window_start"] = dialect.time_value(start - timedelta(days=settings.lookback_days))
    return params


def customer_id_value(customer_id: str, is_integer: bool) -> str | int:
    if not is_integer:
        return customer_id
    try:
        return int(customer_id)
    except ValueError:
        raise SourceError(f"customer id {customer_id!r} is not an integer, as the source's ids are") from None
