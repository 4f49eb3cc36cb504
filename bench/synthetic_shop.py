"""Shared by the benches: synthetic transactions loaded with COPY into a PostgreSQL schema of their own."""

from __future__ import annotations

import time

import pandas as pd
import sqlalchemy as sa

from tasks.load.copy import copy_rows_into

COLUMNS = ["customer_id", "order_id", "occurred_at", "amount"]


def load_shop(engine: sa.Engine, schema: str, rows: pd.DataFrame) -> float:
    """(Re)create ``schema`` with a ``transactions`` table holding ``rows``; returns the COPY's seconds."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"drop schema if exists {schema} cascade")
        conn.exec_driver_sql(f"create schema {schema}")
        conn.exec_driver_sql(
            f"create table {schema}.transactions "
            "(customer_id text, order_id text, occurred_at timestamp, amount numeric(12,2))"
        )
        started = time.perf_counter()
        copy_rows_into(conn, schema, "transactions", COLUMNS, rows)
        return time.perf_counter() - started
