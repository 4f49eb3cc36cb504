"""Seeded synthetic purchase transactions that look like a real shop's, for the demo and tests.

Customers belong to behavioural groups (champions, loyal, new, at risk, big spenders, one-time
shoppers); orders have one to four lines; about 3% of orders get a refund line a few days later; and a
few rows are bad on purpose (no customer id, no amount, dated after the as-of date), as real exports are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Persona:
    """How a group of customers buys: its share, order count, active period (days before as-of) and
    typical line price."""

    name: str
    share: float
    orders: tuple[int, int]
    first_purchase_days_ago: tuple[int, int]
    last_purchase_days_ago: tuple[int, int]
    line_price: float


PERSONAS = (
    Persona("champions", 0.10, (12, 30), (360, 720), (0, 15), 45.0),
    Persona("loyal", 0.18, (6, 14), (200, 720), (5, 60), 30.0),
    Persona("new", 0.14, (1, 2), (0, 30), (0, 30), 30.0),
    Persona("at_risk", 0.16, (5, 12), (400, 720), (120, 260), 35.0),
    Persona("big_spenders", 0.07, (2, 4), (150, 500), (10, 90), 220.0),
    Persona("one_time", 0.35, (1, 2), (200, 720), (200, 720), 20.0),
)
REFUND_ORDER_SHARE = 0.03
BAD_ROW_SHARE = 0.003


def generate_transactions(n_customers: int, as_of: date, seed: int = 7) -> pd.DataFrame:
    """``n_customers`` customers' order lines before ``as_of``, plus a few bad rows.

    Columns: ``customer_id`` (text, null for some bad rows), ``order_id`` (text), ``occurred_at``
    (naive UTC timestamp), ``amount`` (currency units, 2 decimals; negative for refunds; null for
    some bad rows). The same arguments give the same rows.
    """
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    rng = np.random.default_rng(seed)
    persona_of = _draw_personas(rng, n_customers)

    orders_per_customer = np.empty(n_customers, dtype=np.int64)
    first_days = np.empty(n_customers)
    last_days = np.empty(n_customers)
    price = np.empty(n_customers)
    for index, persona in enumerate(PERSONAS):
        members = persona_of == index
        count = int(members.sum())
        orders_per_customer[members] = rng.integers(persona.orders[0], persona.orders[1] + 1, count)
        first = rng.uniform(*persona.first_purchase_days_ago, count)
        last = rng.uniform(*persona.last_purchase_days_ago, count)
        first_days[members] = np.maximum(first, last)
        last_days[members] = np.minimum(first, last)
        price[members] = persona.line_price * rng.lognormal(0.0, 0.25, count)

    customer_of_order = np.repeat(np.arange(n_customers), orders_per_customer)
    n_orders = len(customer_of_order)
    # Each order falls between the customer's first and last purchase; one order sits on each end.
    position = rng.uniform(0.0, 1.0, n_orders)
    order_start = np.cumsum(orders_per_customer) - orders_per_customer
    rank_in_customer = np.arange(n_orders) - np.repeat(order_start, orders_per_customer)
    position[rank_in_customer == 0] = 0.0
    position[(rank_in_customer == np.repeat(orders_per_customer, orders_per_customer) - 1) & (rank_in_customer > 0)] = (
        1.0
    )
    days_ago = first_days[customer_of_order] - position * (first_days - last_days)[customer_of_order]
    seconds_ago = np.maximum(days_ago * 86_400 + rng.uniform(1, 86_400, n_orders), 1).astype(np.int64)

    lines_per_order = rng.choice([1, 2, 3, 4], size=n_orders, p=[0.5, 0.28, 0.15, 0.07])
    order_of_line = np.repeat(np.arange(n_orders), lines_per_order)
    line_seconds_ago = np.maximum(seconds_ago[order_of_line] - rng.integers(0, 300, len(order_of_line)), 1)
    unit = price[customer_of_order[order_of_line]] * rng.lognormal(0.0, 0.4, len(order_of_line))
    quantity = rng.choice([1, 1, 1, 2, 3], size=len(order_of_line))
    amount = np.round(unit * quantity, 2)

    refunded = np.flatnonzero(rng.uniform(size=n_orders) < REFUND_ORDER_SHARE)
    first_line_of_order = np.cumsum(lines_per_order) - lines_per_order
    refund_lines = first_line_of_order[refunded]
    refund_seconds_ago = np.maximum(
        line_seconds_ago[refund_lines] - rng.integers(86_400, 10 * 86_400, len(refunded)), 1
    )

    start = datetime.combine(as_of, time(0))
    frame = pd.DataFrame(
        {
            "customer_id": np.concatenate([customer_of_order[order_of_line], customer_of_order[refunded]]),
            "order_number": np.concatenate([order_of_line, refunded]),
            "seconds_ago": np.concatenate([line_seconds_ago, refund_seconds_ago]),
            "amount": np.concatenate([amount, -amount[refund_lines]]),
        }
    )
    frame["occurred_at"] = pd.Timestamp(start) - pd.to_timedelta(frame["seconds_ago"], unit="s")
    frame["customer_id"] = pd.Series([f"C{number:06d}" for number in frame["customer_id"]], dtype=object)
    frame["order_id"] = [f"O{number:08d}" for number in frame["order_number"]]
    frame = frame[["customer_id", "order_id", "occurred_at", "amount"]].astype({"amount": object})
    frame = _add_bad_rows(frame, rng, start)
    return frame.sort_values(["occurred_at", "order_id"], kind="stable", na_position="last").reset_index(drop=True)


def _draw_personas(rng: np.random.Generator, n_customers: int) -> np.ndarray:
    """Each customer's behavioural group (an index into :data:`PERSONAS`): the generator's first draw."""
    shares = np.array([persona.share for persona in PERSONAS])
    return rng.choice(len(PERSONAS), size=n_customers, p=shares / shares.sum())


def planted_groups(n_customers: int, seed: int = 7) -> pd.Series:
    """The behavioural group :func:`generate_transactions` planted for each customer (same arguments),
    indexed by customer id: the truth a segmentation of its rows can be held against."""
    groups = _draw_personas(np.random.default_rng(seed), n_customers)
    ids = [f"C{number:06d}" for number in range(n_customers)]
    return pd.Series([PERSONAS[group].name for group in groups], index=pd.Index(ids, name="customer_id"))


def _add_bad_rows(frame: pd.DataFrame, rng: np.random.Generator, start: datetime) -> pd.DataFrame:
    n_bad = max(3, int(len(frame) * BAD_ROW_SHARE))
    bad = frame.sample(n=n_bad, random_state=int(rng.integers(2**31))).copy()
    kind = np.arange(n_bad) % 3
    bad.loc[kind == 0, "customer_id"] = None
    bad.loc[kind == 1, "amount"] = None
    bad.loc[kind == 2, "occurred_at"] = start + timedelta(days=2)
    bad["order_id"] = [f"X{number:08d}" for number in range(n_bad)]
    return pd.concat([frame, bad], ignore_index=True)


#: Five income x spending groups shaped like the public "Mall Customers" data (not that data): centre
#: of annual income (k$) and spending score (1-100), spread, and share of the customers.
MALL_GROUPS = (
    ((26.0, 20.0), (7.0, 8.0), 0.115),  # low income, careful
    ((26.0, 79.0), (7.0, 9.0), 0.11),  # low income, spends a lot
    ((55.0, 50.0), (8.0, 6.0), 0.405),  # average
    ((88.0, 17.0), (12.0, 9.0), 0.175),  # high income, careful
    ((87.0, 82.0), (12.0, 8.0), 0.195),  # high income, spends a lot
)


def generate_mall_customers(n_customers: int = 200, seed: int = 7) -> pd.DataFrame:
    """A seeded customer table with the columns of the public Mall Customers data: ``CustomerID``,
    ``Gender``, ``Age``, ``Annual Income (k$)``, ``Spending Score (1-100)``, drawn from five
    income x spending groups; a few genders are left empty, as real exports have gaps."""
    rng = np.random.default_rng(seed)
    shares = np.array([share for _, _, share in MALL_GROUPS])
    group = rng.choice(len(MALL_GROUPS), size=n_customers, p=shares / shares.sum())
    centres = np.array([centre for centre, _, _ in MALL_GROUPS])[group]
    spreads = np.array([spread for _, spread, _ in MALL_GROUPS])[group]
    values = rng.normal(centres, spreads)
    income = np.clip(np.round(values[:, 0]), 15, 140).astype(int)
    spending = np.clip(np.round(values[:, 1]), 1, 99).astype(int)
    gender = rng.choice(["Female", "Male"], size=n_customers, p=[0.56, 0.44]).astype(object)
    gender[rng.random(n_customers) < 0.02] = None
    return pd.DataFrame(
        {
            "CustomerID": np.arange(1, n_customers + 1),
            "Gender": gender,
            "Age": rng.integers(18, 71, size=n_customers),
            "Annual Income (k$)": income,
            "Spending Score (1-100)": spending,
        }
    )
