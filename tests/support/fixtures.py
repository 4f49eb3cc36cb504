"""Small hand-computed transaction fixtures shared by the SQL, flow and CLI tests."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa

AS_OF = date(2024, 3, 1)  # 2024 is a leap year: February has 29 days

# customer_id, order_id, occurred_at (naive = UTC), amount
HAND_ROWS: list[tuple[str | None, str, datetime | None, Decimal | None]] = [
    # A: a two-line order, an order fully refunded (net 0, not counted), a late order on the last day,
    #    a row exactly at as_of (rejected) and a row without an amount (rejected)
    ("A", "o1", datetime(2024, 1, 10, 10, 0), Decimal("30.00")),
    ("A", "o1", datetime(2024, 1, 10, 10, 5), Decimal("20.00")),
    ("A", "o2", datetime(2024, 2, 1, 9, 0), Decimal("100.00")),
    ("A", "o2", datetime(2024, 2, 3, 12, 0), Decimal("-100.00")),
    ("A", "o3", datetime(2024, 2, 28, 23, 59, 59), Decimal("10.10")),
    ("A", "o4", datetime(2024, 3, 1, 0, 0), Decimal("999.00")),
    ("A", "o5", datetime(2024, 2, 15, 0, 0), None),
    # B: only a refund and a zero amount: no net purchases
    ("B", "o6", datetime(2024, 2, 10), Decimal("-25.00")),
    ("B", "o7", datetime(2024, 2, 11), Decimal("0.00")),
    # C: two orders on the same day
    ("C", "o8", datetime(2024, 2, 20, 8, 0), Decimal("15.00")),
    ("C", "o9", datetime(2024, 2, 20, 18, 0), Decimal("5.00")),
    # D: one order exactly at the 30-day lookback start (kept), one a second before it (dropped)
    ("D", "o10", datetime(2024, 1, 31, 0, 0), Decimal("40.00")),
    ("D", "o11", datetime(2024, 1, 30, 23, 59, 59), Decimal("60.00")),
    # a row without customer id, a customer whose only row has no time, one whose only row is late
    (None, "o12", datetime(2024, 2, 1), Decimal("12.00")),
    ("E", "o13", None, Decimal("5.00")),
    ("F", "o14", datetime(2024, 3, 5), Decimal("7.00")),
    # G: 0.10 + 0.20 - 0.30 nets to exactly zero (float sums would leave dust), then a real order
    ("G", "o15", datetime(2024, 2, 24), Decimal("0.10")),
    ("G", "o15", datetime(2024, 2, 24), Decimal("0.20")),
    ("G", "o15", datetime(2024, 2, 24), Decimal("-0.30")),
    ("G", "o16", datetime(2024, 2, 25, 12, 0), Decimal("0.30")),
]

# Worked out by hand from the rows above and the definitions in shared/PRODUCT.md.
# customer: (recency_days, frequency, monetary, avg_order_value, tenure_days)
EXPECTED_BY_ORDER = {
    "A": (1, 2, 60.10, 30.05, 50),  # orders o1 (50.00, 10:05) and o3; o2 nets to 0
    "B": (None, 0, -25.00, None, None),
    "C": (9, 2, 20.00, 10.00, 9),
    "D": (30, 2, 100.00, 50.00, 30),
    "G": (4, 1, 0.30, 0.30, 4),
}
EXPECTED_BY_ORDER_LOOKBACK_30 = {
    "A": (1, 1, 10.10, 10.10, 1),  # o1 (Jan 10) is outside the window; o2 inside nets to 0
    "B": (None, 0, -25.00, None, None),
    "C": (9, 2, 20.00, 10.00, 9),
    "D": (30, 1, 40.00, 40.00, 30),
    "G": (4, 1, 0.30, 0.30, 4),
}
# Without an order id every row is one order.
EXPECTED_BY_ROW = {
    "A": (1, 4, 60.10, 15.025, 50),  # 30, 20, 100 and 10.10 are positive rows; first at 10:00
    "B": (None, 0, -25.00, None, None),
    "C": (9, 2, 20.00, 10.00, 9),
    "D": (30, 2, 100.00, 50.00, 30),
    "G": (4, 3, 0.30, 0.10, 6),  # 0.10, 0.20 and 0.30 are positive rows; the first on Feb 24
}
# one guest checkout (no customer id) of 12.00: counted apart, not rejected
EXPECTED_GUEST_ROWS, EXPECTED_GUEST_NET = 1, 12.00
EXPECTED_REJECTED = {
    "null_occurred_at": 1,
    "occurred_at_or_after_as_of": 2,
    "non_numeric_amount": 1,
}


def create_transactions_table(
    engine: sa.Engine,
    rows: list[tuple[str | None, str, datetime | None, Decimal | None]] = HAND_ROWS,
    table: str = "transactions",
    schema: str | None = None,
    time_type: sa.types.TypeEngine | None = None,
) -> sa.Table:
    """Create ``table`` (customer_id, order_id, occurred_at, amount) and insert ``rows``."""
    metadata = sa.MetaData(schema=schema)
    transactions = sa.Table(
        table,
        metadata,
        sa.Column("customer_id", sa.Text),
        sa.Column("order_id", sa.Text),
        sa.Column("occurred_at", time_type if time_type is not None else sa.DateTime()),
        sa.Column("amount", sa.Numeric(12, 2)),
    )
    with engine.begin() as conn:
        transactions.drop(conn, checkfirst=True)
        transactions.create(conn)
        if not rows:
            return transactions
        conn.execute(
            transactions.insert(),
            [{"customer_id": c, "order_id": o, "occurred_at": t, "amount": a} for c, o, t, a in rows],
        )
    return transactions
