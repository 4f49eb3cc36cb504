"""The covering index in a test's schema: its state, and an invalid one as a failed build leaves it."""

from __future__ import annotations

import psycopg.errors
import pytest
import sqlalchemy as sa

from tasks.extract.covering_index import covering_index_columns, covering_index_name
from tasks.settings import SegmentSettings
from tests.support.backend import Backend


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
