"""An independent, row-by-row pandas computation of the feature definitions in shared/PRODUCT.md.

It shares no code with the SQL: money is summed as exact Decimals, days are counted with Python
datetimes. Tests compare the database's results with it on generated data.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pandas as pd


def reference_features(
    rows: pd.DataFrame, as_of: date, lookback_days: int | None = None, by_order: bool = True
) -> dict[str, tuple]:
    """customer -> (recency_days, frequency, monetary, avg_order_value, tenure_days)."""
    start = datetime.combine(as_of, time(0))
    window_start = start - timedelta(days=lookback_days) if lookback_days else None
    orders: dict[tuple[str, object], list[tuple[datetime, Decimal]]] = {}
    for index, row in enumerate(rows.itertuples(index=False)):
        if row.customer_id is None or pd.isna(row.customer_id) or pd.isna(row.occurred_at) or pd.isna(row.amount):
            continue
        occurred = pd.Timestamp(row.occurred_at).to_pydatetime()
        if occurred >= start or (window_start is not None and occurred < window_start):
            continue
        key = (str(row.customer_id), row.order_id if by_order else index)
        orders.setdefault(key, []).append((occurred, Decimal(str(row.amount))))

    customers: dict[str, dict] = {}
    for (customer, _order), lines in orders.items():
        net = sum((amount for _, amount in lines), Decimal(0))
        ordered_at = max(occurred for occurred, _ in lines)
        entry = customers.setdefault(customer, {"monetary": Decimal(0), "times": []})
        entry["monetary"] += net
        if net > 0:
            entry["times"].append(ordered_at)

    def whole_days(since: datetime) -> int:
        return math.floor((start - since).total_seconds() / 86_400)

    result = {}
    for customer, entry in customers.items():
        frequency = len(entry["times"])
        monetary = float(entry["monetary"])
        if frequency:
            result[customer] = (
                whole_days(max(entry["times"])),
                frequency,
                monetary,
                float(entry["monetary"] / frequency),
                whole_days(min(entry["times"])),
            )
        else:
            result[customer] = (None, 0, monetary, None, None)
    return result
