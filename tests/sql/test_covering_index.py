"""`segments index --create`: the covering index is built valid, on the configured columns, once at a time,
and a build that failed earlier does not leave the extract without it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tasks.errors import ConfigurationError, IndexBuildInProgressError
from tasks.extract.covering_index import (
    covering_index_columns,
    covering_index_lock_key,
    covering_index_name,
    create_covering_index,
)
from tasks.extract.engines import SqlSession, open_source
from tasks.extract.queries import query_parameters, render_feature_query
from tasks.extract.source import inspect_source
from tasks.locking import advisory_lock
from tasks.settings import SegmentSettings, load_settings
from tests.support.backend import Backend
from tests.support.covering_index import index_state, leave_an_invalid_covering_index
from tests.support.shop import AS_OF, load_synthetic


@pytest.fixture
def shop(postgres_url: str, pg_schema: str) -> Backend:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=200)
    return backend


def extract_plan(shop: Backend, settings: SegmentSettings) -> str:
    with open_source(settings) as session:
        assert isinstance(session, SqlSession)
        source = inspect_source(session, settings)
        sql = render_feature_query(session, settings, source)
        session.conn.exec_driver_sql("set local enable_seqscan = off")  # 200 customers: cost alone would scan it
        params = query_parameters(settings, AS_OF, session, source)
        rows = session.conn.execute(sa.text("explain " + sql), params).scalars().all()
    return "\n".join(rows)


def test_the_index_is_created_valid_on_the_configured_columns_and_the_extract_reads_it(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id"))

    built = create_covering_index(settings)

    assert built.action == "created" and "create index concurrently" in built.statement
    state = index_state(shop, settings)
    assert state is not None
    _, valid, unique, columns = state
    assert valid and not unique
    assert columns == covering_index_columns(settings) == ["customer_id", "order_id", "occurred_at", "amount"]
    assert f"Index Only Scan using {covering_index_name(settings)}" in extract_plan(shop, settings)


def test_an_index_already_there_is_kept_not_built_again(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id"))
    create_covering_index(settings)
    before = index_state(shop, settings)

    built = create_covering_index(settings)

    assert built.action == "kept" and built.reason is None
    assert index_state(shop, settings) == before  # the same index (oid): nothing dropped


def test_an_index_left_invalid_by_a_failed_build_is_dropped_and_built_again(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id"))
    left = leave_an_invalid_covering_index(shop, settings)
    assert "Index Only Scan" not in extract_plan(shop, settings)  # the planner never uses it

    built = create_covering_index(settings)

    assert built.action == "rebuilt" and "invalid" in (built.reason or "")
    state = index_state(shop, settings)
    assert state is not None and state[1] and not state[2]  # valid, and the plain index
    assert state[0] != left
    assert f"Index Only Scan using {covering_index_name(settings)}" in extract_plan(shop, settings)


def test_an_index_of_this_name_on_other_columns_is_replaced(shop: Backend) -> None:
    # built while the order id was not mapped; now it is
    create_covering_index(load_settings(**shop.settings()))
    settings = load_settings(**shop.settings(order_id_column="order_id"))

    built = create_covering_index(settings)

    assert built.action == "rebuilt"
    assert (
        built.reason == "it was on (customer_id, occurred_at, amount), not (customer_id, order_id, occurred_at, amount)"
    )
    state = index_state(shop, settings)
    assert state is not None and state[1] and state[3] == ["customer_id", "order_id", "occurred_at", "amount"]


def test_an_index_of_this_name_on_another_table_is_an_error_and_left_alone(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id"))
    with shop.engine().begin() as conn:
        conn.exec_driver_sql(f"create table {shop.table('other')} (customer_id text)")
        conn.exec_driver_sql(f"create index {covering_index_name(settings)} on {shop.table('other')} (customer_id)")
    before = index_state(shop, settings)

    with pytest.raises(ConfigurationError, match=r"is on .*other, not on the source .*transactions; rename or drop it"):
        create_covering_index(settings)

    assert index_state(shop, settings) == before


def test_a_second_build_of_the_same_index_stops_at_once_naming_the_first(shop: Backend) -> None:
    settings = load_settings(**shop.settings(order_id_column="order_id"))

    # the lock as a running build holds it (it is free: the factory is never called)
    first_build = advisory_lock(settings, covering_index_lock_key(settings), AssertionError)
    expected = r"another `segments index --create` is building the index on .*transactions \(server process"
    with first_build, pytest.raises(IndexBuildInProgressError, match=expected) as busy:
        create_covering_index(settings)

    assert "wait for it to finish" in str(busy.value)
    assert index_state(shop, settings) is None  # the second built nothing
    assert create_covering_index(settings).action == "created"  # and the lock went with the first
