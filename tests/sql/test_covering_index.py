"""`segments index --create`: the covering index is built valid, on the configured columns, once at a time,
and a build that failed earlier does not leave the extract without it."""

from __future__ import annotations

import psycopg.errors
import pytest
import sqlalchemy as sa

from tasks.errors import ConfigurationError, IndexBuildInProgressError
from tasks.extract import (
    covering_index_columns,
    covering_index_lock_key,
    covering_index_name,
    create_covering_index,
    inspect_source,
    query_parameters,
    render_feature_query,
    set_extract_options,
)
from tasks.locking import advisory_lock
from tasks.settings import SegmentSettings, load_settings
from tests.conftest import Backend
from tests.sql.test_load import AS_OF, load_synthetic


@pytest.fixture
def shop(postgres_url: str, pg_schema: str) -> Backend:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=200)
    return backend


def index_state(shop: Backend, settings: SegmentSettings) -> tuple[int, bool, bool, list[str]] | None:
    """The index of the covering index's name in the test's schema: its oid, valid, unique, columns."""
    with shop.engine().connect() as conn:
        row = conn.execute(
            sa.text(
                "select c.oid, i.indisvalid, i.indisunique, array(select a.attname from unnest(i.indkey::int2[]) "
                "with ordinality k(n, p) join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n "
                "order by k.p) from pg_class c join pg_index i on i.indexrelid = c.oid "
                "join pg_namespace s on s.oid = c.relnamespace where s.nspname = :schema and c.relname = :name"
            ),
            {"schema": shop.schema, "name": covering_index_name(settings)},
        ).one_or_none()
    return None if row is None else (row[0], row[1], row[2], list(row[3]))


def extract_plan(shop: Backend, settings: SegmentSettings) -> str:
    engine = shop.engine()
    source = inspect_source(engine, settings)
    sql = render_feature_query(engine, settings, source)
    with engine.connect() as conn:
        set_extract_options(conn)
        conn.exec_driver_sql("set local enable_seqscan = off")  # a 200-customer table: cost alone would scan it
        rows = conn.execute(sa.text("explain " + sql), query_parameters(settings, AS_OF, source)).scalars().all()
        conn.rollback()
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


def leave_an_invalid_covering_index(shop: Backend, settings: SegmentSettings) -> int:
    """Make a concurrent build of the covering index's name fail half-way, as PostgreSQL leaves it after
    a deadlock or a cancel: an invalid index. Returns its oid."""
    columns = ", ".join(covering_index_columns(settings))
    engine = shop.engine()
    with engine.begin() as conn:  # two equal rows: a unique build of these columns fails half-way
        conn.exec_driver_sql(
            f"insert into {shop.table('transactions')} select * from {shop.table('transactions')} "
            "where customer_id is not null limit 1"
        )
    with engine.connect() as conn, pytest.raises(sa.exc.IntegrityError) as failed:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            f"create unique index concurrently {covering_index_name(settings)} "
            f"on {shop.table('transactions')} ({columns})"
        )
    assert isinstance(failed.value.orig, psycopg.errors.UniqueViolation)
    left = index_state(shop, settings)
    assert left is not None and not left[1]  # what PostgreSQL leaves: an invalid index of this name
    return left[0]


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
