"""A synthetic shop in a test's database, and runs of the pipeline over it: the same wiring the flow
runs (``run_segmentation``), with the steps as plain functions."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import sqlalchemy as sa

from flows.wiring import RunResult, run_segmentation
from tasks.settings import SegmentSettings, load_settings
from tasks.synthetic import generate_transactions
from tests.support.backend import Backend

AS_OF = date(2024, 3, 1)


def write_transactions(
    backend: Backend,
    rows: pd.DataFrame,
    id_type: sa.types.TypeEngine[Any] | None = None,
    append: bool = False,
    more_types: dict[str, sa.types.TypeEngine[Any]] | None = None,
) -> None:
    """``rows`` as the backend's ``transactions`` table, replacing it (or appended to it), with the
    source's column types (and ``more_types`` for further columns)."""
    rows.to_sql(
        "transactions",
        backend.engine(),
        schema=backend.schema,
        index=False,
        if_exists="append" if append else "replace",
        dtype={
            "customer_id": id_type if id_type is not None else sa.Text(),
            "order_id": sa.Text(),
            "occurred_at": sa.DateTime(),
            "amount": sa.Numeric(12, 2),
        }
        | (more_types or {}),
    )


def load_synthetic(backend: Backend, customers: int = 300, seed: int = 5, integer_ids: bool = False) -> None:
    rows = generate_transactions(customers, AS_OF, seed=seed)
    if integer_ids:
        rows["customer_id"] = rows["customer_id"].str[1:].astype("Int64")
    write_transactions(backend, rows, sa.BigInteger() if integer_ids else None)


def run_on(settings: SegmentSettings, as_of: date = AS_OF) -> RunResult:
    """One run of ``settings`` as of ``as_of``, the report left out unless the settings name a file."""
    return run_segmentation(settings.model_copy(update={"as_of": as_of}))


def run_once(backend: Backend, as_of: date = AS_OF, **overrides: object) -> str:
    """One run on the backend's transactions (orders by ``order_id``); returns the run id."""
    settings = load_settings(**backend.settings(order_id_column="order_id", **overrides))
    return run_on(settings, as_of).run_id


def read(backend: Backend, table: str, order_by: str = "1") -> pd.DataFrame:
    with backend.engine().connect() as conn:
        return pd.read_sql(sa.text(f"select * from {backend.table(table)} order by {order_by}"), conn)
