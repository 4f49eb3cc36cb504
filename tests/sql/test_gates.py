"""Data gates stop a run before it writes; output checks roll back a write that breaks them."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.errors import DataGateError, OutputCheckError
from tasks.load import write
from tests.support.backend import Backend
from tests.support.shop import load_synthetic, read, run_once


def add_rows_without_customer(backend: Backend, count: int) -> None:
    with backend.engine().begin() as conn:
        conn.execute(
            sa.text(
                f"insert into {backend.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                "values (null, :order_id, :at, 10)"
            ),
            [{"order_id": f"N{i}", "at": pd.Timestamp("2024-01-01").to_pydatetime()} for i in range(count)],
        )


def test_too_many_rejected_rows_stop_the_run_unless_forced(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend)
    before = read(backend, "customer_segments", "customer_id")
    rows = int(read(backend, "segment_runs")["rows_scanned"].iloc[0])
    add_rows_without_customer(backend, rows // 5)

    with pytest.raises(DataGateError, match=r"% of .* rows were rejected \(null_customer_id .*--force"):
        run_once(backend)

    pd.testing.assert_frame_equal(read(backend, "customer_segments", "customer_id"), before)
    runs = read(backend, "segment_runs", "started_at")
    assert runs["status"].tolist() == ["succeeded", "failed"] and "data gate" in runs["error"].iloc[1]

    run_once(backend, force=True)
    assert read(backend, "segment_runs", "started_at")["status"].iloc[-1] == "succeeded"


def test_a_large_drop_in_customers_stops_the_run_unless_forced(backend: Backend) -> None:
    load_synthetic(backend, customers=400)
    run_once(backend)
    with backend.engine().begin() as conn:  # 80% of customers disappear from the source
        conn.exec_driver_sql(f"delete from {backend.table('transactions')} where customer_id > 'C000080'")

    with pytest.raises(DataGateError, match=r"drop of 8\d%, more than max_customer_drop 50%"):
        run_once(backend)
    run_once(backend, force=True)

    assert len(read(backend, "customer_segments")) < 100


def test_a_write_that_breaks_an_output_check_is_rolled_back(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend)
    before = read(backend, "customer_segments", "customer_id")
    original = write.replace_assignments

    def all_but_one(conn, settings, tables, assignments, *args):  # type: ignore[no-untyped-def]
        original(conn, settings, tables, assignments.iloc[:-1], *args)

    monkeypatch.setattr(write, "replace_assignments", all_but_one)
    with pytest.raises(OutputCheckError, match=r"299 customers written, 300 in the run"):
        run_once(backend, model_policy="refit")

    pd.testing.assert_frame_equal(read(backend, "customer_segments", "customer_id"), before)
    assert read(backend, "segment_runs", "started_at")["status"].tolist() == ["succeeded", "failed"]
