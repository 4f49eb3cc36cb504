"""The feature query on real SQLite and PostgreSQL, against hand-computed fixtures."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tasks.errors import DatabaseUnavailableError, EmptySourceError, SourceError
from tasks.extract.features import extract_customer_features
from tasks.extract.source import check_source
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.fixtures import (
    AS_OF,
    EXPECTED_BY_ORDER,
    EXPECTED_BY_ORDER_LOOKBACK_30,
    EXPECTED_BY_ROW,
    EXPECTED_GUEST_NET,
    EXPECTED_GUEST_ROWS,
    EXPECTED_REJECTED,
    HAND_ROWS,
    create_transactions_table,
)

FEATURES = ["recency_days", "frequency", "monetary", "avg_order_value", "tenure_days"]


def features_by_customer(frame) -> dict[str, tuple]:
    result = {}
    for row in frame.itertuples(index=False):
        values = []
        for name in FEATURES:
            value = getattr(row, name)
            values.append(None if value is None or value is sa.null() or _is_na(value) else value)
        result[str(row.customer_id)] = tuple(values)
    return result


def _is_na(value) -> bool:
    try:
        return bool(value != value) or value is None or str(value) == "<NA>"
    except TypeError:
        return str(value) == "<NA>"


def assert_features_equal(actual: dict[str, tuple], expected: dict[str, tuple]) -> None:
    assert set(actual) == set(expected)
    for customer, values in expected.items():
        got = actual[customer]
        for name, want, have in zip(FEATURES, values, got, strict=True):
            if want is None:
                assert have is None, f"{customer}.{name}: expected null, got {have!r}"
            elif isinstance(want, float):
                assert math.isclose(have, want, abs_tol=1e-9), f"{customer}.{name}: {have!r} != {want!r}"
            else:
                assert have == want, f"{customer}.{name}: {have!r} != {want!r}"


def run_extract(backend: Backend, as_of: date = AS_OF, **overrides):
    settings = load_settings(**backend.settings(**overrides))
    return extract_customer_features(settings, as_of)


def test_features_follow_the_product_definitions(backend: Backend) -> None:
    create_transactions_table(backend.engine(), schema=backend.schema)

    result = run_extract(backend, order_id_column="order_id")

    assert_features_equal(features_by_customer(result.features), EXPECTED_BY_ORDER)
    assert result.counts.rejected_by_reason == EXPECTED_REJECTED
    assert (result.counts.guest_rows, result.counts.guest_net_amount) == (EXPECTED_GUEST_ROWS, EXPECTED_GUEST_NET)
    assert result.counts.rows_scanned == len(HAND_ROWS)
    assert result.counts.rows_in_window == len(HAND_ROWS) - sum(EXPECTED_REJECTED.values()) - EXPECTED_GUEST_ROWS


def test_lookback_keeps_rows_at_the_window_start_and_drops_earlier_ones(backend: Backend) -> None:
    create_transactions_table(backend.engine(), schema=backend.schema)

    result = run_extract(backend, order_id_column="order_id", lookback_days=30)

    assert_features_equal(features_by_customer(result.features), EXPECTED_BY_ORDER_LOOKBACK_30)
    assert result.counts.rows_before_window == 3  # A's two o1 lines and D's o11
    assert result.counts.rejected_by_reason == EXPECTED_REJECTED


def test_without_order_id_every_row_is_one_order(backend: Backend) -> None:
    create_transactions_table(backend.engine(), schema=backend.schema)

    result = run_extract(backend)

    assert_features_equal(features_by_customer(result.features), EXPECTED_BY_ROW)


def test_amount_can_be_quantity_times_unit_price(backend: Backend) -> None:
    metadata = sa.MetaData(schema=backend.schema)
    lines = sa.Table(
        "transactions",
        metadata,
        sa.Column("buyer", sa.Integer),
        sa.Column("ts", sa.DateTime),
        sa.Column("qty", sa.Integer),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("basket", sa.Integer),
    )
    engine = backend.engine()
    with engine.begin() as conn:
        lines.create(conn)
        conn.execute(
            lines.insert(),
            [
                {"buyer": 7, "ts": datetime(2024, 2, 1, 12), "qty": 3, "price": Decimal("2.50"), "basket": 1},
                {"buyer": 7, "ts": datetime(2024, 2, 1, 12), "qty": 1, "price": Decimal("10.00"), "basket": 1},
                {"buyer": 7, "ts": datetime(2024, 2, 20), "qty": -1, "price": Decimal("10.00"), "basket": 2},
                # no amount without both factors: rejected, counted once each
                {"buyer": 7, "ts": datetime(2024, 2, 21), "qty": None, "price": Decimal("4.00"), "basket": 3},
                {"buyer": 7, "ts": datetime(2024, 2, 22), "qty": 2, "price": None, "basket": 4},
            ],
        )

    result = run_extract(
        backend,
        customer_id_column="buyer",
        occurred_at_column="ts",
        amount_column="",
        quantity_column="qty",
        unit_price_column="price",
        order_id_column="basket",
    )

    # basket 1: 7.50 + 10.00 = 17.50; basket 2 is a refund of 10.00; net 7.50 over one counted order.
    # Feb 1 12:00 to Mar 1 00:00 (2024) is 28.5 days: 28 whole days.
    assert_features_equal(features_by_customer(result.features), {"7": (28, 1, 7.50, 7.50, 28)})
    assert result.counts.rejected_by_reason["non_numeric_amount"] == 2
    assert (result.counts.rows_scanned, result.counts.rows_in_window) == (5, 3)
    assert result.customer_id_is_integer
    assert result.features["customer_id"].dtype == "int64"


POSTGRES_TIME_TYPES = {"timestamp": sa.DateTime(), "timestamptz": sa.DateTime(timezone=True), "date": sa.Date()}


@pytest.mark.parametrize("time_type", list(POSTGRES_TIME_TYPES))
def test_postgres_time_types_are_read_as_utc(postgres_url: str, pg_schema: str, time_type: str) -> None:
    column_type = POSTGRES_TIME_TYPES[time_type]
    engine = sa.create_engine(postgres_url)
    rows = [
        ("A", "o1", datetime(2024, 2, 27, 23, 30), Decimal("10")),  # 23:30 UTC, already Feb 28 in Tokyo
        ("A", "o2", datetime(2024, 2, 29, 23, 59, 59), Decimal("5")),
        ("A", "o3", datetime(2024, 3, 1), Decimal("100")),  # at the as-of instant: not seen
    ]
    if time_type == "timestamptz":
        from datetime import UTC

        rows = [(c, o, t.replace(tzinfo=UTC), a) for c, o, t, a in rows]
    elif time_type == "date":
        rows = [(c, o, t.date(), a) for c, o, t, a in rows]  # type: ignore[misc]
    create_transactions_table(engine, rows=rows, schema=pg_schema, time_type=column_type)
    engine.dispose()
    # A session time zone far from UTC must not move any day boundary.
    url = sa.engine.make_url(postgres_url).update_query_dict({"options": "-c TimeZone=Asia/Tokyo"})
    backend = Backend("postgresql", url.render_as_string(hide_password=False), pg_schema)

    result = run_extract(backend, order_id_column="order_id")

    # timestamp(tz): last order Feb 29 23:59:59 UTC -> 0 whole days to Mar 1; first Feb 27 23:30 -> 2
    # date: Feb 29 -> 1 day; Feb 27 -> 3 days
    expected = (1, 2, 15.0, 7.5, 3) if time_type == "date" else (0, 2, 15.0, 7.5, 2)
    assert_features_equal(features_by_customer(result.features), {"A": expected})
    assert result.counts.rejected_by_reason["occurred_at_or_after_as_of"] == 1


@pytest.mark.parametrize("time_type", list(POSTGRES_TIME_TYPES))
def test_postgres_compares_a_timestamp_column_without_casting_every_row(
    postgres_url: str, pg_schema: str, time_type: str
) -> None:
    from tasks.database import make_engine
    from tasks.extract.engines import SqlSession, open_source
    from tasks.extract.queries import query_parameters, render_feature_query
    from tasks.extract.source import inspect_source

    engine = make_engine(postgres_url)
    rows = [("A", "o1", datetime(2024, 2, 27, 23, 30), Decimal("10"))]
    create_transactions_table(engine, rows=rows, schema=pg_schema, time_type=POSTGRES_TIME_TYPES[time_type])
    engine.dispose()
    settings = load_settings(**Backend("postgresql", postgres_url, pg_schema).settings(order_id_column="order_id"))
    with open_source(settings) as session:
        assert isinstance(session, SqlSession)
        source = inspect_source(session, settings)
        sql = render_feature_query(session, settings, source)
        params = query_parameters(settings, AS_OF, session, source)
        plan = "\n".join(session.conn.execute(sa.text(f"explain (verbose) {sql}"), params).scalars())

    # the row filter on the time column, as the plan shows it
    time_filter = next(line for line in plan.splitlines() if "occurred_at" in line and "Filter" in line)
    if time_type == "date":  # a date must become a UTC midnight: one cast per row
        assert "occurred_at)::timestamp with time zone" in time_filter
    else:  # the bound takes the column's type; the column is compared as it is
        assert "occurred_at)::timestamp" not in time_filter, time_filter


def test_sqlite_text_times_with_offsets_and_non_numeric_amounts(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # an untyped view: SQLite cannot tell the amount's type, so each value is checked
        conn.exec_driver_sql("create table raw (customer_id, occurred_at, amount)")
        conn.exec_driver_sql(
            "insert into raw values "
            "('A', '2024-02-29T23:30:00+02:00', 10),"  # 21:30 UTC
            "('A', '2024-02-29T23:30:00-02:00', 10),"  # Mar 1 01:30 UTC: after as-of
            "('A', 'not a date', 10),"
            "('A', '2024-02-01', 'twelve')"
        )
        conn.exec_driver_sql("create view shop as select * from raw")
    engine.dispose()

    result = extract_customer_features(load_settings(database_url=url, source_table="shop"), AS_OF)

    assert_features_equal(features_by_customer(result.features), {"A": (0, 1, 10.0, 10.0, 0)})
    assert result.counts.rejected_by_reason == {
        "null_occurred_at": 1,
        "occurred_at_or_after_as_of": 1,
        "non_numeric_amount": 1,
    }


def test_a_text_amount_column_is_refused_naming_the_setting(backend: Backend) -> None:
    metadata = sa.MetaData(schema=backend.schema)
    sa.Table(
        "transactions",
        metadata,
        sa.Column("customer_id", sa.Text),
        sa.Column("occurred_at", sa.DateTime),
        sa.Column("amount", sa.Text),
    )
    metadata.create_all(backend.engine())

    with pytest.raises(SourceError, match=r"'amount'.*not a number; set SEGMENTS_AMOUNT_COLUMN"):
        run_extract(backend)


def test_a_missing_table_is_named_with_its_setting(backend: Backend) -> None:
    with pytest.raises(SourceError, match=r"'.*nowhere' not found .*; set SEGMENTS_SOURCE_TABLE"):
        run_extract(backend, source_table=backend.table("nowhere"))


def test_a_missing_column_is_named_with_its_setting_and_a_suggestion(backend: Backend) -> None:
    create_transactions_table(backend.engine(), schema=backend.schema)

    with pytest.raises(
        SourceError, match=r"column 'order_ids' not found .*did you mean 'order_id'.*SEGMENTS_ORDER_ID_COLUMN"
    ):
        run_extract(backend, order_id_column="order_ids")


def test_an_empty_source_fails_clearly(backend: Backend) -> None:
    create_transactions_table(backend.engine(), rows=[], schema=backend.schema)

    with pytest.raises(EmptySourceError, match="has no rows"):
        check_source(load_settings(**backend.settings()))
    with pytest.raises(EmptySourceError, match="has no rows"):
        run_extract(backend)


def test_a_source_with_only_rejected_rows_fails_with_the_reasons(backend: Backend) -> None:
    late = [("A", "o1", datetime(2024, 3, 2), Decimal("1"))]
    create_transactions_table(backend.engine(), rows=late, schema=backend.schema)

    with pytest.raises(EmptySourceError, match="occurred_at_or_after_as_of 1"):
        run_extract(backend)


def test_an_unreachable_database_fails_without_showing_the_password() -> None:
    settings = load_settings(database_url="postgresql+psycopg://segments:s3cret-pw@127.0.0.1:1/shop")

    with pytest.raises(DatabaseUnavailableError) as raised:
        check_source(settings)

    message = str(raised.value)
    assert "s3cret-pw" not in message
    assert "cannot connect to postgresql+psycopg://segments:***@127.0.0.1:1/shop" in message
    assert "SEGMENTS_DATABASE_URL" in message


def test_rows_far_in_the_past_and_the_as_of_boundary(backend: Backend) -> None:
    """A row a millisecond before as-of counts and is 0 days old; one at as-of does not count.

    (SQLite resolves times to the millisecond, so a millisecond is the finest step both can tell.)
    """
    rows = [
        ("A", "o1", datetime.combine(AS_OF, datetime.min.time()) - timedelta(milliseconds=1), Decimal("1")),
        ("A", "o2", datetime(2014, 3, 1), Decimal("2")),
        ("B", "o3", datetime.combine(AS_OF, datetime.min.time()), Decimal("1")),
        ("B", "o4", datetime(2024, 2, 29, 0, 0, 0), Decimal("1")),
    ]
    create_transactions_table(backend.engine(), rows=rows, schema=backend.schema)

    result = run_extract(backend, order_id_column="order_id")

    # 2014-03-01 to 2024-03-01 is 3653 days (three leap days: 2016, 2020, 2024)
    assert_features_equal(
        features_by_customer(result.features),
        {"A": (0, 2, 3.0, 1.5, 3653), "B": (1, 1, 1.0, 1.0, 1)},
    )


def test_whole_days_hold_to_the_microsecond_over_decades(postgres_url: str, pg_schema: str) -> None:
    """PostgreSQL keeps microseconds: a row one microsecond after midnight 74 years before as-of is a
    day younger than one at midnight (the day count goes through a double of seconds)."""
    backend = Backend("postgresql", postgres_url, pg_schema)
    midnight = datetime(1950, 3, 1)
    rows = [
        ("A", "o1", midnight + timedelta(microseconds=1), Decimal("1")),
        ("B", "o2", midnight, Decimal("1")),
        ("C", "o3", datetime.combine(AS_OF, datetime.min.time()) - timedelta(microseconds=1), Decimal("1")),
    ]
    create_transactions_table(backend.engine(), rows=rows, schema=backend.schema)

    result = run_extract(backend, order_id_column="order_id")

    days = (AS_OF - midnight.date()).days
    assert_features_equal(
        features_by_customer(result.features),
        {"A": (days - 1, 1, 1.0, 1.0, days - 1), "B": (days, 1, 1.0, 1.0, days), "C": (0, 1, 1.0, 1.0, 0)},
    )
    backend.dispose()


def test_a_view_with_mixed_case_columns_and_float_customer_ids(postgres_url: str, pg_schema: str) -> None:
    """The shape of public retail exports: quoted mixed-case names, ids as floats, quantity x price,
    cancellations as their own negative invoices."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'create table {pg_schema}.retail ("InvoiceNo" text, "Quantity" integer, "InvoiceDate" timestamp, '
            f'"UnitPrice" double precision, "CustomerID" double precision)'
        )
        conn.exec_driver_sql(
            f"insert into {pg_schema}.retail values "
            "('536365', 6, '2024-02-01 08:26', 2.55, 17850), ('536365', 2, '2024-02-01 08:26', 0.1, 17850),"
            "('C536379', -1, '2024-02-02 09:41', 2.55, 17850), ('536370', 3, '2024-02-10 10:00', 1.1, 12583),"
            "('536371', 1, '2024-02-11 10:00', 9.99, null)"
        )
        conn.exec_driver_sql(f'create view {pg_schema}."Sales" as select * from {pg_schema}.retail')
    engine.dispose()
    backend = Backend("postgresql", postgres_url, pg_schema)

    result = run_extract(
        backend,
        source_table=f"{pg_schema}.Sales",
        customer_id_column="CustomerID",
        occurred_at_column="InvoiceDate",
        amount_column="",
        quantity_column="Quantity",
        unit_price_column="UnitPrice",
        order_id_column="InvoiceNo",
    )

    # 17850: invoice 536365 = 6 x 2.55 + 2 x 0.10 = 15.50; the cancellation -2.55 is its own invoice
    assert_features_equal(
        features_by_customer(result.features),
        {"17850": (28, 1, 12.95, 12.95, 28), "12583": (19, 1, 3.30, 3.30, 19)},
    )
    assert result.customer_id_is_integer and result.features["customer_id"].dtype == "int64"
    # the guest checkout (no CustomerID) is counted with its amount, 9.99, and rejects nothing
    assert (result.counts.guest_rows, result.counts.guest_net_amount) == (1, 9.99)
    assert sum(result.counts.rejected_by_reason.values()) == 0


@pytest.mark.parametrize("amount_type", ["numeric(12,2)", "double precision", "real", "integer", "bigint", "money"])
def test_every_postgres_number_type_works_as_the_amount(postgres_url: str, pg_schema: str, amount_type: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"create table {pg_schema}.transactions (customer_id text, occurred_at timestamp, amount {amount_type})"
        )
        conn.exec_driver_sql(
            f"insert into {pg_schema}.transactions values ('A', '2024-02-01', 30), ('A', '2024-02-05', -10), "
            "('A', '2024-02-20', 5)"
        )
    engine.dispose()

    result = run_extract(Backend("postgresql", postgres_url, pg_schema))

    assert_features_equal(features_by_customer(result.features), {"A": (10, 2, 25.0, 12.5, 29)})
