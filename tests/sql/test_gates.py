"""Data gates stop a run before it writes; output checks roll back a write that breaks them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.errors import DataGateError, OutputCheckError
from tasks.load import write
from tests.support.backend import Backend
from tests.support.shop import load_synthetic, read, run_once


def add_rows(backend: Backend, count: int, customer_id: str | None, amount: str | None) -> None:
    """``count`` rows of ``customer_id`` (None: guest checkouts) with ``amount`` (None: no amount)."""
    with backend.engine().begin() as conn:
        conn.execute(
            sa.text(
                f"insert into {backend.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                "values (:customer_id, :order_id, :at, :amount)"
            ),
            [
                {
                    "customer_id": customer_id,
                    "order_id": f"N{i}",
                    "at": pd.Timestamp("2024-01-01").to_pydatetime(),
                    "amount": amount,
                }
                for i in range(count)
            ],
        )


def test_guest_checkouts_are_counted_with_their_amount_and_stop_nothing(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    rows = len(read(backend, "transactions"))
    add_rows(backend, rows // 3, None, "10")  # a quarter of the rows are guest checkouts, as in retail

    run_once(backend)

    run = read(backend, "segment_runs").iloc[0]
    assert run["status"] == "succeeded"
    guests_planted = int(read(backend, "transactions")["customer_id"].isna().sum())
    assert run["guest_rows"] == guests_planted  # the generator's few guests and ours
    assert float(run["guest_net_amount"]) >= 10 * (rows // 3)
    rejected = run["rejected_by_reason"]
    assert "null_customer_id" not in (rejected if isinstance(rejected, dict) else json.loads(rejected))


def test_a_jump_in_rows_rejected_for_quality_stops_the_run_in_one_line_unless_forced(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend)
    before = read(backend, "customer_segments", "customer_id")
    rows = int(read(backend, "segment_runs")["rows_scanned"].iloc[0])
    add_rows(backend, rows // 5, "C000001", None)  # rows without an amount: a sixth of all now

    with pytest.raises(DataGateError) as stopped:
        run_once(backend)

    message = str(stopped.value)
    assert "\n" not in message and "rejected for quality (null_occurred_at 0, non_numeric_amount" in message
    assert "up from 0." in message and "SEGMENTS_MAX_REJECTED_SHARE_RISE (5% points)" in message
    assert message.endswith("Nothing was written; fix the source, or run with --force")
    pd.testing.assert_frame_equal(read(backend, "customer_segments", "customer_id"), before)
    runs = read(backend, "segment_runs", "started_at")
    assert runs["status"].tolist() == ["succeeded", "failed"] and "data gate" in runs["error"].iloc[1]

    run_once(backend, force=True)
    assert read(backend, "segment_runs", "started_at")["status"].iloc[-1] == "succeeded"


def test_a_first_run_is_not_gated_on_its_share_of_rejected_rows(backend: Backend) -> None:
    load_synthetic(backend, customers=200)
    rows = len(read(backend, "transactions"))
    add_rows(backend, rows // 4, "C000001", None)  # a fifth of the rows without an amount, from the start

    run_once(backend)

    assert read(backend, "segment_runs")["status"].tolist() == ["succeeded"]


def test_a_large_drop_in_customers_stops_the_run_unless_forced(backend: Backend) -> None:
    load_synthetic(backend, customers=400)
    run_once(backend)
    with backend.engine().begin() as conn:  # 80% of customers disappear from the source
        conn.exec_driver_sql(f"delete from {backend.table('transactions')} where customer_id > 'C000080'")

    with pytest.raises(DataGateError, match=r"drop of 8\d%, more than SEGMENTS_MAX_CUSTOMER_DROP \(50%\)"):
        run_once(backend)
    run_once(backend, force=True)

    assert len(read(backend, "customer_segments")) < 100


def test_a_write_that_breaks_an_output_check_is_rolled_back(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend)
    before = read(backend, "customer_segments", "customer_id")
    original = write.replace_assignments

    def all_but_one(conn, settings, tables, assignments, *args, **kwargs):  # type: ignore[no-untyped-def]
        return original(conn, settings, tables, assignments.iloc[:-1], *args, **kwargs)

    monkeypatch.setattr(write, "replace_assignments", all_but_one)
    with pytest.raises(OutputCheckError, match=r"299 customers written, 300 in the run"):
        run_once(backend, model_policy="refit")

    pd.testing.assert_frame_equal(read(backend, "customer_segments", "customer_id"), before)
    assert read(backend, "segment_runs", "started_at")["status"].tolist() == ["succeeded", "failed"]
