"""The extract in customer partitions: disjoint, complete, one snapshot, equal to the one-query extract."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.errors import ExtractTimeoutError
from tasks.extract.features import extract_customer_features
from tasks.extract.partitions import PartitionPlan, extract_in_partitions, extract_partition
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic


@pytest.fixture
def shop(postgres_url: str, pg_schema: str) -> Backend:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=400)
    return backend


def test_partitions_cover_every_customer_once_and_equal_one_query(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id", partitions=3))
    seen: list[pd.DataFrame] = []

    def one_after_another(plan: PartitionPlan) -> list[pd.DataFrame]:
        frames = [extract_partition(plan, partition) for partition in range(plan.partitions)]
        seen.extend(frames)
        return frames

    partitioned = extract_in_partitions(settings, AS_OF, one_after_another)
    whole = extract_customer_features(settings, AS_OF)

    assert len(seen) == 3 and all(len(frame) > 50 for frame in seen)
    ids = pd.concat([frame["customer_id"] for frame in seen])
    assert ids.is_unique  # disjoint
    pd.testing.assert_frame_equal(partitioned.features, whole.features)  # complete, and the same values
    assert partitioned.counts == whole.counts
    shop.dispose()


def test_partitions_and_counts_read_one_snapshot(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id", partitions=2))
    before = extract_customer_features(settings, AS_OF)

    def with_a_write_in_between(plan: PartitionPlan) -> list[pd.DataFrame]:
        first = extract_partition(plan, 0)
        with shop.engine().begin() as conn:  # committed while the extract runs: not in its snapshot
            conn.execute(
                sa.text(
                    f"insert into {shop.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                    "select customer_id, 'late-' || order_id, occurred_at, amount from "
                    f"{shop.table('transactions')} where customer_id is not null"
                )
            )
        return [first, extract_partition(plan, 1)]

    partitioned = extract_in_partitions(settings, AS_OF, with_a_write_in_between)

    pd.testing.assert_frame_equal(partitioned.features, before.features)
    assert partitioned.counts == before.counts
    assert extract_customer_features(settings, AS_OF).counts.rows_scanned > before.counts.rows_scanned
    shop.dispose()


def test_the_one_query_extract_counts_and_aggregates_in_one_snapshot(
    shop: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.extract.features as features

    settings = load_settings(**shop.settings(order_id_column="order_id"))
    before = extract_customer_features(settings, AS_OF)
    original = features.read_rows

    def read_after_a_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        with shop.engine().begin() as conn:  # committed between the count and the aggregation
            conn.execute(sa.text(f"delete from {shop.table('transactions')} where customer_id is null"))
            conn.execute(sa.text(f"delete from {shop.table('transactions')} where customer_id < 'C000050'"))
        return original(*args, **kwargs)

    monkeypatch.setattr(features, "read_rows", read_after_a_write)
    during = extract_customer_features(settings, AS_OF)

    assert during.counts == before.counts and during.counts.guest_rows > 0
    pd.testing.assert_frame_equal(during.features, before.features)
    shop.dispose()


def test_partitions_are_ranges_of_the_customer_id_cut_from_a_sample(
    shop: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.extract.partitions as partitions

    with shop.engine().connect() as conn:  # statistics, so the table's size is known
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"analyze {shop.table('transactions')}")
    # a sample of the 400-customer shop's ~4,700 rows in 40 pages: asking 500 (a block sample of ~11%)
    # drew no page at all in 3 of 300 tries here, and the run would then go in one partition; at 2,000
    # (~42%) 0 of 1,000 tries came back empty or unbalanced
    monkeypatch.setattr(partitions, "SAMPLE_ROWS", 2000)
    settings = load_settings(**shop.settings(order_id_column="order_id", partitions=3))
    seen: list[pd.DataFrame] = []
    bounds: list[tuple] = []

    def one_after_another(plan: PartitionPlan) -> list[pd.DataFrame]:
        bounds.append(plan.bounds)
        frames = [extract_partition(plan, partition) for partition in range(plan.partitions)]
        seen.extend(frames)
        return frames

    partitioned = extract_in_partitions(settings, AS_OF, one_after_another)
    whole = extract_customer_features(settings, AS_OF)

    (cuts,) = bounds
    assert len(cuts) == 2 and cuts[0] < cuts[1]
    # each partition holds exactly the ids of its range: below the first cut, between, at or above the last
    assert (seen[0]["customer_id"] < cuts[0]).all()
    assert ((seen[1]["customer_id"] >= cuts[0]) & (seen[1]["customer_id"] < cuts[1])).all()
    assert (seen[2]["customer_id"] >= cuts[1]).all()
    assert all(len(frame) > 40 for frame in seen)  # a sample's quantiles: roughly balanced
    pd.testing.assert_frame_equal(partitioned.features, whole.features)
    assert partitioned.counts == whole.counts
    shop.dispose()


def test_the_plain_pipeline_runs_partitions_on_threads_over_a_view(shop: Backend) -> None:
    from tasks.extract.run_input import extract_run_input

    with shop.engine().begin() as conn:  # a small view: its ids are read whole
        conn.exec_driver_sql(
            f"create view {shop.table('transactions_view')} as select * from {shop.table('transactions')}"
        )
    overrides = {"order_id_column": "order_id", "source_table": f"{shop.schema}.transactions_view"}
    partitioned = extract_run_input(load_settings(**shop.settings(partitions=2, **overrides)), AS_OF)
    whole = extract_run_input(load_settings(**shop.settings(**overrides)), AS_OF)

    pd.testing.assert_frame_equal(partitioned.features, whole.features)
    assert partitioned.counts == whole.counts
    shop.dispose()


def test_postgresql_stops_a_partition_at_its_time_limit_with_a_clear_error(shop: Backend) -> None:
    # a view that pauses once per query (an init plan) before its rows: every partition takes 1 s
    with shop.engine().begin() as conn:
        conn.exec_driver_sql(
            f"create view {shop.table('slow_transactions')} as select * from {shop.table('transactions')} "
            "where (select pg_sleep(1)::text) = ''"
        )
    settings = load_settings(
        **shop.settings(order_id_column="order_id", partitions=2, source_table=f"{shop.schema}.slow_transactions")
    )

    def with_a_short_limit(plan: PartitionPlan) -> list[pd.DataFrame]:
        assert plan.time_limit_seconds == 3600  # the default, an hour
        limited = dataclasses.replace(plan, time_limit_seconds=0.2)
        return [extract_partition(limited, partition) for partition in range(plan.partitions)]

    with pytest.raises(ExtractTimeoutError, match=r"partition 1 of 2 .* longer than 0\.2 s .*statement timeout"):
        extract_in_partitions(settings, AS_OF, with_a_short_limit)
    shop.dispose()


def test_a_large_view_and_a_table_never_analyzed_are_cut_from_a_sample_not_read_whole(
    shop: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.extract.partitions as partitions

    with shop.engine().begin() as conn:
        conn.exec_driver_sql(
            f"create view {shop.table('transactions_view')} as select * from {shop.table('transactions')}"
        )
        # a table just loaded, before any ANALYZE: its size is unknown to pg_class (reltuples -1)
        conn.exec_driver_sql(
            f"create table {shop.table('transactions_new')} as select * from {shop.table('transactions')}"
        )
        total = conn.exec_driver_sql(f"select count(*) from {shop.table('transactions')}").scalar_one()
    monkeypatch.setattr(partitions, "SAMPLE_ROWS", 2000)  # the shop's ~4,700 rows count as large
    statements: list[str] = []

    def keep_bounds_queries(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "percentile_disc" in statement:  # the query without its comment lines
            statements.append("\n".join(line for line in statement.lower().splitlines() if not line.startswith("--")))

    sa.event.listen(sa.Engine, "before_cursor_execute", keep_bounds_queries)
    try:
        cuts = {
            source: partitions.partition_bounds(
                load_settings(**shop.settings(source_table=f"{shop.schema}.{source}")), 2
            )
            for source in ("transactions_view", "transactions_new")
        }
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", keep_bounds_queries)
    view_query, table_query = statements
    assert "random() <" in view_query and "tablesample" not in view_query  # rows drawn as the view is read
    assert "tablesample system" in table_query  # blocks of the table, its size from the planner
    with shop.engine().connect() as conn:
        for (cut,) in cuts.values():  # a median from a sample: roughly half the rows on each side
            below = conn.execute(
                sa.text(f"select count(*) from {shop.table('transactions')} where customer_id < :cut"), {"cut": cut}
            ).scalar_one()
            assert 0.25 * total < below < 0.75 * total
    shop.dispose()


def test_an_id_holding_most_rows_collapses_the_cuts_and_still_covers_everyone(shop: Backend) -> None:
    from tasks.extract.partitions import partition_bounds

    with shop.engine().begin() as conn:
        conn.exec_driver_sql(
            f"insert into {shop.table('transactions')} (customer_id, order_id, occurred_at, amount) "
            "select 'C-whale', 'w' || n, timestamp '2024-01-01', 1 from generate_series(1, 20000) as n"
        )
    settings = load_settings(**shop.settings(order_id_column="order_id", partitions=4))

    cuts = partition_bounds(settings, 4)
    partitioned = extract_in_partitions(
        settings, AS_OF, lambda plan: [extract_partition(plan, partition) for partition in range(plan.partitions)]
    )

    assert len(cuts) < 3 and "C-whale" in cuts  # equal quantiles merged into one cut
    assert "C-whale" in set(partitioned.features["customer_id"])
    pd.testing.assert_frame_equal(partitioned.features, extract_customer_features(settings, AS_OF).features)
    shop.dispose()


def test_integer_customer_ids_are_cut_as_numbers(postgres_url: str, pg_schema: str) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=400, integer_ids=True)  # ids 0..399: as text, "100" < "99"
    settings = load_settings(**backend.settings(order_id_column="order_id", partitions=2))
    seen: list[pd.DataFrame] = []

    def one_after_another(plan: PartitionPlan) -> list[pd.DataFrame]:
        assert all(isinstance(cut, int) for cut in plan.bounds)
        seen.extend(extract_partition(plan, partition) for partition in range(plan.partitions))
        return seen

    partitioned = extract_in_partitions(settings, AS_OF, one_after_another)

    first, second = (frame["customer_id"].astype("int64") for frame in seen)
    assert first.max() < second.min()  # numeric ranges: every id of the first below every id of the second
    pd.testing.assert_frame_equal(partitioned.features, extract_customer_features(settings, AS_OF).features)
    backend.dispose()
