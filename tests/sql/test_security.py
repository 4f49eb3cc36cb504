"""Least privilege, injection attempts and secrets, on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tasks.database import split_statements
from tasks.load.grants import render_grants
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic, run_on


@pytest.fixture
def roles(postgres_url: str) -> Iterator[tuple[str, str, str, str]]:
    """A job role and a BI role that can log in, a source schema and an output schema; all dropped after."""
    suffix = uuid.uuid4().hex[:8]
    job, bi, source, output = f"seg_job_{suffix}", f"seg_bi_{suffix}", f"shop_{suffix}", f"bi_{suffix}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"create role {job} login")
        conn.exec_driver_sql(f"create role {bi} login")
        conn.exec_driver_sql(f"create schema {source}")
    try:
        yield job, bi, source, output
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"drop schema if exists {source} cascade")
            conn.exec_driver_sql(f"drop schema if exists {output} cascade")
            conn.exec_driver_sql(f"drop owned by {job}, {bi} cascade")
            conn.exec_driver_sql(f"drop role {job}")
            conn.exec_driver_sql(f"drop role {bi}")
        admin.dispose()


def as_role(url: str, role: str) -> str:
    return sa.engine.make_url(url).set(username=role).render_as_string(hide_password=False)


def test_the_bi_role_reads_segments_but_cannot_write_them_or_read_transactions(
    postgres_url: str, roles: tuple[str, str, str, str]
) -> None:
    job, bi, source, output = roles
    source_backend = Backend("postgresql", postgres_url, source)
    load_synthetic(source_backend, customers=200)
    source_backend.dispose()
    admin_settings = load_settings(
        database_url=postgres_url, source_table=f"{source}.transactions", output_schema=output
    )
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in split_statements(render_grants(admin_settings, job_role=job, bi_role=bi)):
            conn.exec_driver_sql(statement)
    admin.dispose()

    # the job, connected as its own role, runs end to end
    job_settings = load_settings(
        database_url=as_role(postgres_url, job),
        source_table=f"{source}.transactions",
        output_schema=output,
        order_id_column="order_id",
    )
    run = run_on(job_settings, AS_OF)
    assert len(run.outcome.segments.assignments) == 200

    bi_engine = sa.create_engine(as_role(postgres_url, bi))
    job_engine = sa.create_engine(as_role(postgres_url, job))
    try:
        with bi_engine.connect() as conn:
            assert conn.execute(sa.text(f"select count(*) from {output}.customer_segments")).scalar_one() == 200
            assert conn.execute(sa.text(f"select count(*) from {output}.segment_transitions")).scalar_one() >= 1
            assert conn.execute(sa.text(f"select count(*) from {output}.customer_segment_history")).scalar_one() == 200
        for forbidden in (
            f"delete from {output}.customer_segments",
            f"insert into {output}.segment_runs (run_id, as_of, started_at, status) "
            "values ('x', now(), now(), 'running')",
            f"select count(*) from {source}.transactions",
            f"create table {output}.intruder (x int)",
        ):
            with bi_engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(forbidden))
        with job_engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text(f"delete from {source}.transactions"))  # the job only reads the source
    finally:
        bi_engine.dispose()
        job_engine.dispose()


INJECTIONS = [
    "x; drop table canary",
    "x'; drop table canary; --",
    'x"; drop table canary; --',
    "x) ; drop table canary; --",
    "x/**/",
    "x -- comment",
    "\u0441ustomer_id",  # Cyrillic es, looks like a Latin c
    "\uff54ransactions",  # fullwidth t
    "transactions\u200b",  # zero-width space
    "x\x00y",
    "1x",
    "x" * 64,
]
NAME_SETTINGS = [
    "source_table",
    "output_schema",
    "customer_id_column",
    "occurred_at_column",
    "amount_column",
    "order_id_column",
]


@pytest.fixture
def canary(postgres_url: str, pg_schema: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table if not exists canary (x int)")
    yield engine
    with engine.begin() as conn:
        assert sa.inspect(conn).has_table("canary"), "an injected statement dropped the canary"
        conn.exec_driver_sql("drop table canary")
    engine.dispose()


@pytest.mark.parametrize("name", INJECTIONS)
def test_injected_names_are_refused_by_settings_and_by_the_flow_form(
    postgres_url: str, pg_schema: str, canary: sa.Engine, name: str
) -> None:
    from flows.segment_customers import segment_customers
    from tasks.errors import ConfigurationError, SourceError
    from tasks.extract.features import extract_customer_features
    from tasks.settings import is_file_source

    for field in NAME_SETTINGS:
        with pytest.raises(ConfigurationError, match=f"SEGMENTS_{field.upper()}"):
            load_settings(database_url=postgres_url, **{field: name})
        if field == "source_table" and is_file_source(name):
            # a path of files (DuckDB, Spark): never part of SQL, only a bound value or a reader's argument
            settings = load_settings(database_url=postgres_url, source_url="duckdb://", source_table=name)
            with pytest.raises(SourceError, match="not found"):
                extract_customer_features(settings, AS_OF)
            continue
        with pytest.raises(Exception, match=field):
            segment_customers.validate_parameters({field: name})


def test_an_injected_value_is_only_ever_a_bound_value(postgres_url: str, pg_schema: str, canary: sa.Engine) -> None:
    from tasks.errors import EmptySourceError
    from tasks.on_demand import score_customer

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=50)
    settings = load_settings(**backend.settings(order_id_column="order_id"))
    run_on(settings, AS_OF)

    for value in ("x'; drop table canary; --", "' or '1'='1", "C000001' --"):
        with pytest.raises(EmptySourceError, match="has no usable rows"):
            score_customer(settings, value, AS_OF)
    backend.dispose()


def test_reserved_words_and_mixed_case_names_are_quoted_not_refused(postgres_url: str, pg_schema: str) -> None:
    from tasks.extract.features import extract_customer_features

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'create table {pg_schema}."Order" ("user" text, "from" timestamp, "Amount" numeric, "select" text)'
        )
        conn.exec_driver_sql(
            f"insert into {pg_schema}.\"Order\" values ('A', '2024-02-01', 10, 'o1'), ('A', '2024-02-01', 5, 'o1')"
        )
    engine.dispose()
    settings = load_settings(
        database_url=postgres_url,
        source_table=f"{pg_schema}.Order",
        customer_id_column="user",
        occurred_at_column="from",
        amount_column="Amount",
        order_id_column="select",
    )

    result = extract_customer_features(settings, AS_OF)

    assert result.features[["frequency", "monetary"]].values.tolist() == [[1, 15.0]]
