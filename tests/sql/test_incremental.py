"""Incremental nights on a real PostgreSQL: a night that recomputes only the customers with changed
rows gives the features of a full aggregation (checked against the independent computation of
PRODUCT.md's definitions), the state it leaves is the full aggregation's, and a full refresh counts
what the nights could not see (a deleted row)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.wiring import RunResult
from tasks.errors import ConfigurationError, SourceError
from tasks.extract.covering_index import (
    change_index_name,
    covering_index_name,
    covering_index_statement,
    create_source_indexes,
)
from tasks.extract.engines import SqlSession, open_source
from tasks.extract.incremental import read_stored_state
from tasks.extract.queries import query_parameters, render_change_query, render_feature_query
from tasks.extract.result import StateUpdate
from tasks.extract.source import inspect_source
from tasks.settings import SegmentSettings, load_settings
from tasks.synthetic import generate_transactions
from tests.sql.test_customer_features import assert_features_equal, features_by_customer
from tests.support.backend import Backend
from tests.support.reference import reference_features
from tests.support.shop import AS_OF, run_on, write_transactions

DAY = timedelta(days=1)
MIDNIGHT = datetime.combine(AS_OF, time(0))


@pytest.fixture
def shop(postgres_url: str, pg_schema: str) -> Iterator[Backend]:
    backend = Backend("postgresql", postgres_url, pg_schema)
    yield backend
    backend.dispose()


def append_rows(shop: Backend, rows: pd.DataFrame) -> None:
    """Load ``rows`` as one batch: each gets the next value of the load sequence (the change column)."""
    with shop.engine().connect() as conn:
        exists = sa.inspect(conn).has_table("transactions", schema=shop.schema)
        last = (
            conn.execute(sa.text(f"select max(loaded_seq) from {shop.table('transactions')}")).scalar() if exists else 0
        )
    batch = rows.assign(loaded_seq=range((last or 0) + 1, (last or 0) + 1 + len(rows)))
    write_transactions(shop, batch, append=True, more_types={"loaded_seq": sa.BigInteger()})


def row(customer: str | None, order: str, occurred_at: datetime, amount: str) -> dict[str, Any]:
    return {"customer_id": customer, "order_id": order, "occurred_at": occurred_at, "amount": amount}


def settings_of(shop: Backend, **overrides: object) -> SegmentSettings:
    chosen: dict[str, object] = {"order_id_column": "order_id", "changed_at_column": "loaded_seq", "n_clusters": 4}
    return load_settings(**shop.settings(**(chosen | overrides)))


def source_rows(shop: Backend) -> pd.DataFrame:
    with shop.engine().connect() as conn:
        return pd.read_sql(sa.text(f"select * from {shop.table('transactions')}"), conn)


def state_of(result: RunResult) -> StateUpdate:
    assert result.extract.state is not None
    return result.extract.state


def last_run(shop: Backend) -> dict[str, Any]:
    with shop.engine().connect() as conn:
        return dict(
            conn.execute(sa.text(f"select * from {shop.table('segment_runs')} order by started_at desc limit 1"))
            .mappings()
            .one()
        )


def assert_features_are_the_definitions(shop: Backend, result: RunResult, lookback_days: int | None) -> None:
    expected = reference_features(source_rows(shop), result.as_of, lookback_days=lookback_days)
    assert_features_equal(features_by_customer(result.extract.features), expected)


def base_shop(shop: Backend) -> None:
    """Generated history up to three days after AS_OF (so some rows wait for later nights), a customer
    whose only order a later night refunds, and one whose only order is just inside a 90-day window."""
    history = generate_transactions(300, AS_OF + 3 * DAY, seed=21)
    extra = pd.DataFrame(
        [
            row("C900002", "O-R1", MIDNIGHT - 5 * DAY, "40.00"),
            row("C900005", "O-L1", MIDNIGHT - 90 * DAY + timedelta(hours=1), "70.00"),
        ]
    )
    append_rows(shop, pd.concat([history, extra], ignore_index=True))


def night_rows(shop: Backend) -> tuple[pd.DataFrame, dict[str, str]]:
    """The next night's batch: a late refund of an old order, a row backfilled with an old date, a new
    customer, the refund of a customer's only order, a guest checkout."""
    rows = source_rows(shop)
    known = rows.dropna(subset=["customer_id", "amount"])
    known = known[known["occurred_at"] < MIDNIGHT - 30 * DAY]
    orders = known.groupby("customer_id")["order_id"].nunique()
    refunded, backfilled = orders[orders >= 3].index[:2]
    old_order = known[known["customer_id"] == refunded].sort_values("occurred_at")["order_id"].iloc[0]
    batch = pd.DataFrame(
        [
            row(refunded, old_order, MIDNIGHT + timedelta(hours=2), "-10.00"),
            row(backfilled, "O-BF1", MIDNIGHT - 60 * DAY, "55.55"),
            row("C900001", "O-N1", MIDNIGHT + timedelta(hours=3), "20.00"),
            row("C900001", "O-N2", MIDNIGHT + DAY + timedelta(hours=3), "30.00"),
            row("C900002", "O-R1", MIDNIGHT + timedelta(hours=4), "-40.00"),
            row(None, "O-G1", MIDNIGHT + timedelta(hours=5), "12.00"),
        ]
    )
    return batch, {"refunded": refunded, "backfilled": backfilled}


@pytest.mark.parametrize("lookback_days", [None, 90])
def test_an_incremental_night_gives_the_full_aggregations_features(shop: Backend, lookback_days: int | None) -> None:
    base_shop(shop)
    settings = settings_of(shop, lookback_days=lookback_days)
    first = run_on(settings, AS_OF)
    assert state_of(first).mode == "full"
    assert_features_are_the_definitions(shop, first, lookback_days)
    batch, who = night_rows(shop)
    append_rows(shop, batch)

    night = run_on(settings, AS_OF + DAY)

    state = state_of(night)
    assert state.mode == "incremental"
    assert_features_are_the_definitions(shop, night, lookback_days)
    before, after = (features_by_customer(result.extract.features) for result in (first, night))
    assert after[who["refunded"]][2] == pytest.approx(before[who["refunded"]][2] - 10)  # late refund of an old order
    assert after[who["backfilled"]][1] == before[who["backfilled"]][1] + 1  # an old date, loaded tonight
    assert after["C900001"][1] == 1 and "C900001" not in before  # new; its second order counts tomorrow
    assert after["C900002"][1:3] == (0, 0.0) and before["C900002"][1] == 1  # its only order refunded
    assert ("C900005" in after) is (lookback_days is None)  # its only row left the window
    # the night read its own rows and the few customers they touch, not the history
    assert night.extract.counts.rows_scanned == len(batch)
    assert night.extract.counts.guest_rows == 1
    assert state.customers_recomputed < len(after) / 3
    run = last_run(shop)
    assert (run["extract_mode"], run["customers_recomputed"]) == ("incremental", state.customers_recomputed)
    assert run["watermark"] == str(int(source_rows(shop)["loaded_seq"].max()))

    tomorrow = run_on(settings, AS_OF + 2 * DAY)  # C900001's second order is now before as-of
    assert state_of(tomorrow).mode == "incremental"
    assert features_by_customer(tomorrow.extract.features)["C900001"][1] == 2
    assert_features_are_the_definitions(shop, tomorrow, lookback_days)

    # the state the nights left is the full aggregation's: a full refresh at the same date corrects nothing
    refresh = run_on(settings.model_copy(update={"full_refresh": True}), AS_OF + 2 * DAY)
    assert (state_of(refresh).mode, state_of(refresh).reconciliation_differences) == ("full", 0)
    pd.testing.assert_frame_equal(refresh.extract.features, tomorrow.extract.features)


def test_a_deleted_row_is_caught_by_the_full_refresh(shop: Backend) -> None:
    base_shop(shop)
    settings = settings_of(shop)
    run_on(settings, AS_OF)
    rows = source_rows(shop)
    line = rows[rows["occurred_at"] < MIDNIGHT - 30 * DAY].dropna(subset=["customer_id", "amount"]).iloc[0]
    with shop.engine().begin() as conn:  # a deletion leaves no row with a later change value
        conn.execute(sa.text(f"delete from {shop.table('transactions')} where loaded_seq = :s"), {"s": line.loaded_seq})

    night = run_on(settings, AS_OF)
    assert state_of(night).mode == "incremental" and state_of(night).customers_recomputed == 0
    expected = reference_features(source_rows(shop), AS_OF)
    stale = features_by_customer(night.extract.features)[line.customer_id]
    assert stale != expected[line.customer_id]  # what an incremental night cannot see

    refresh = run_on(settings.model_copy(update={"full_refresh": True}), AS_OF)
    assert (state_of(refresh).mode, state_of(refresh).reconciliation_differences) == ("full", 1)
    assert last_run(shop)["reconciliation_differences"] == 1
    assert_features_are_the_definitions(shop, refresh, None)


def test_a_full_aggregation_runs_when_the_state_cannot_be_carried_forward(shop: Backend) -> None:
    base_shop(shop)
    settings = settings_of(shop, full_refresh_days=2)

    def mode(result: RunResult) -> tuple[str, str]:
        return state_of(result).mode, state_of(result).reason

    assert mode(run_on(settings, AS_OF)) == ("full", "no state from an earlier successful run")
    assert mode(run_on(settings, AS_OF + 20 * DAY))[0] == "incremental"  # dates run far ahead, the clock did not
    with shop.engine().begin() as conn:  # two days pass
        conn.exec_driver_sql(f"update {shop.table('segment_runs')} set finished_at = finished_at - interval '2 days'")
    refreshed = mode(run_on(settings, AS_OF + 21 * DAY))
    assert refreshed == ("full", "the last full aggregation finished 2 days ago (SEGMENTS_FULL_REFRESH_DAYS is 2)")
    assert mode(run_on(settings, AS_OF + 22 * DAY))[0] == "incremental"
    wider = settings.model_copy(update={"lookback_days": 400})
    assert "lookback changed" in mode(run_on(wider, AS_OF + 22 * DAY))[1]
    assert mode(run_on(settings, AS_OF + 22 * DAY))[0] == "full"  # the lookback changed back
    assert "before the state's" in mode(run_on(settings, AS_OF + DAY))[1]
    without = run_on(settings.model_copy(update={"changed_at_column": None}), AS_OF + DAY)
    assert without.extract.state is None and last_run(shop)["extract_mode"] == "full"
    assert mode(run_on(settings, AS_OF + DAY)) == ("full", "no state from an earlier successful run")


def test_sqlite_sources_are_always_aggregated_in_full(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="SQLite source is aggregated in full"):
        load_settings(database_url=f"sqlite:///{tmp_path / 'shop.db'}", changed_at_column="loaded_seq")


def test_a_change_column_that_is_not_a_time_or_number_is_refused(shop: Backend) -> None:
    base_shop(shop)
    with shop.engine().begin() as conn:
        conn.exec_driver_sql(f"alter table {shop.table('transactions')} add column batch text")
    with pytest.raises(SourceError, match="SEGMENTS_CHANGED_AT_COLUMN"):
        run_on(settings_of(shop, changed_at_column="batch"), AS_OF)


def test_segments_index_also_builds_the_index_nights_find_their_rows_by(shop: Backend) -> None:
    base_shop(shop)
    settings = settings_of(shop)

    built = create_source_indexes(settings)

    assert [index.action for index in built] == ["created", "created"]
    with shop.engine().connect() as conn:
        definition = conn.execute(
            sa.text("select indexdef from pg_indexes where schemaname = :s and indexname = :n"),
            {"s": shop.schema, "n": change_index_name(settings)},
        ).scalar_one()
    assert definition.endswith("(loaded_seq)")
    assert "(loaded_seq)" in covering_index_statement(settings).splitlines()[-1]


def test_a_night_looks_its_customers_up_through_the_covering_index(shop: Backend) -> None:
    base_shop(shop)
    settings = settings_of(shop)
    create_source_indexes(settings)
    run_on(settings, AS_OF)
    append_rows(shop, night_rows(shop)[0])
    prior, _, due = read_stored_state(settings, AS_OF + DAY)
    assert prior is not None
    with open_source(settings) as session:
        assert isinstance(session, SqlSession)
        source = inspect_source(session, settings)
        since = session.read(
            render_change_query(session, settings, source, "changed_customers"), {"watermark": prior.watermark}
        )
        changed = pd.concat([since["customer_id"], due.astype(str)]).drop_duplicates()
        table = session.customer_ids_table(changed)
        sql = render_feature_query(session, settings, source, changed_customers=table)
        params = query_parameters(settings, AS_OF + DAY, session, source)
        plan = session.conn.execute(sa.text("explain " + sql), params).scalars().all()
    assert 5 <= len(changed) < 20  # the night's customers and those whose rows as-of reached, not all 300
    assert f"Index Only Scan using {covering_index_name(settings)}" in "\n".join(plan)


def test_a_retail_export_loaded_in_two_parts(shop: Backend) -> None:
    """Shaped like the public Online Retail exports: float customer ids, quantity x unit price,
    cancellations as invoices of their own with a negative quantity, loaded in two parts."""
    rows = generate_transactions(300, AS_OF, seed=33).dropna(subset=["amount"])
    amount = pd.to_numeric(rows["amount"])
    retail = pd.DataFrame(
        {
            "customer_no": pd.to_numeric(rows["customer_id"].str[1:]).astype("float64"),
            "invoice": rows["order_id"].where(amount >= 0, "C" + rows["order_id"]),
            "invoice_date": rows["occurred_at"],
            "quantity": (amount.abs() > 50).astype(int) + 1,
        }
    )
    retail["quantity"] = retail["quantity"].where(amount >= 0, -retail["quantity"])
    retail["unit_price"] = (amount.abs() / retail["quantity"].abs()).round(2)
    split = MIDNIGHT - 60 * DAY
    dtype = {
        "customer_no": sa.Float(),
        "invoice": sa.Text(),
        "invoice_date": sa.DateTime(),
        "unit_price": sa.Numeric(10, 2),
    }
    for part in (retail[retail["invoice_date"] < split], retail[retail["invoice_date"] >= split]):
        part.to_sql("transactions", shop.engine(), schema=shop.schema, index=False, if_exists="append", dtype=dtype)
        with shop.engine().begin() as conn:  # the load sequence: a later part, later values
            conn.exec_driver_sql(
                f"alter table {shop.table('transactions')} add column if not exists loaded_seq bigserial"
            )
    settings = load_settings(
        **shop.settings(
            customer_id_column="customer_no",
            order_id_column="invoice",
            occurred_at_column="invoice_date",
            amount_column="",
            quantity_column="quantity",
            unit_price_column="unit_price",
            changed_at_column="loaded_seq",
            full_refresh_days=365,  # the second part comes two months later
            n_clusters=4,
        )
    )
    run_on(settings, split.date())

    night = run_on(settings, AS_OF)

    assert state_of(night).mode == "incremental"
    loaded = source_rows(shop)
    reference_rows = pd.DataFrame(
        {
            "customer_id": loaded["customer_no"].map(lambda value: None if pd.isna(value) else str(int(value))),
            "order_id": loaded["invoice"],
            "occurred_at": loaded["invoice_date"],
            "amount": [
                None if pd.isna(price) else str(Decimal(int(quantity)) * Decimal(str(price)))
                for quantity, price in zip(loaded["quantity"], loaded["unit_price"], strict=True)
            ],
        }
    )
    expected = reference_features(reference_rows, AS_OF)
    assert len(expected) > 250
    assert_features_equal(features_by_customer(night.extract.features), expected)


def test_a_load_timestamp_works_as_the_change_column(shop: Backend) -> None:
    base_shop(shop)
    with shop.engine().begin() as conn:  # every row stamped when it is written, later rows later
        conn.exec_driver_sql(
            f"alter table {shop.table('transactions')} add column loaded_at timestamptz default clock_timestamp()"
        )
    settings = settings_of(shop, changed_at_column="loaded_at")
    run_on(settings, AS_OF)
    append_rows(shop, night_rows(shop)[0])

    night = run_on(settings, AS_OF + DAY)

    assert state_of(night).mode == "incremental" and 5 <= state_of(night).customers_recomputed < 20
    assert_features_are_the_definitions(shop, night, None)
    with shop.engine().connect() as conn:
        latest = conn.exec_driver_sql(f"select max(loaded_at) from {shop.table('transactions')}").scalar_one()
    assert pd.Timestamp(last_run(shop)["watermark"]) == pd.Timestamp(latest)
