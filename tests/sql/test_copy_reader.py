"""Reading a query's rows with COPY TO STDOUT (tasks.database.read_with_copy) on a real PostgreSQL:
every row across many network reads, and a query failing halfway raises its own error and leaves the
connection usable."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from tasks.database import make_engine, read_with_copy

ROWS = 300_000  # several MB of text: the rows arrive over many reads of the socket


def test_every_row_arrives_in_order_across_many_reads(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            frame = read_with_copy(
                conn,
                "select g as n, repeat('x', 40) || g as label, case when g % 7 = 0 then null else g end as gap "
                "from generate_series(1, :rows) as g",
                {"rows": ROWS},
            )
            # the connection takes the next statement: the COPY's result was collected
            assert conn.execute(sa.text("select 41 + 1")).scalar_one() == 42
    finally:
        engine.dispose()

    assert len(frame) == ROWS
    assert frame["n"].tolist() == list(range(1, ROWS + 1))
    assert frame["label"].iloc[-1] == "x" * 40 + str(ROWS)
    assert int(frame["gap"].isna().sum()) == ROWS // 7


def test_a_query_failing_after_sending_rows_raises_its_error_and_the_connection_recovers(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))  # a transaction begun, as the extract's settings begin it
            # rows 1..199,999 are sent before row 200,000 divides by zero
            with pytest.raises(psycopg.errors.DivisionByZero, match="division by zero"):
                read_with_copy(
                    conn,
                    "select 1 / (g - :fail_at) as n from generate_series(1, :rows) as g",
                    {"fail_at": 200_000, "rows": ROWS},
                )
            conn.rollback()
            assert conn.execute(sa.text("select 41 + 1")).scalar_one() == 42
    finally:
        engine.dispose()
