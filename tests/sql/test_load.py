"""Writing a run's outputs: atomic, idempotent per as-of date, and nothing lost on failure."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks import load
from tasks.pipeline import run_pipeline
from tasks.settings import load_settings
from tasks.synthetic import generate_transactions
from tests.conftest import Backend

AS_OF = date(2024, 3, 1)


def write_transactions(backend: Backend, rows: pd.DataFrame, id_type: sa.types.TypeEngine | None = None) -> None:
    """``rows`` as the backend's ``transactions`` table, replacing it, with the source's column types."""
    rows.to_sql(
        "transactions",
        backend.engine(),
        schema=backend.schema,
        index=False,
        if_exists="replace",
        dtype={
            "customer_id": id_type if id_type is not None else sa.Text(),
            "order_id": sa.Text(),
            "occurred_at": sa.DateTime(),
            "amount": sa.Numeric(12, 2),
        },
    )


def load_synthetic(backend: Backend, customers: int = 300, seed: int = 5, integer_ids: bool = False) -> None:
    rows = generate_transactions(customers, AS_OF, seed=seed)
    if integer_ids:
        rows["customer_id"] = rows["customer_id"].str[1:].astype("Int64")
    write_transactions(backend, rows, sa.BigInteger() if integer_ids else None)


def run_without_prefect(backend: Backend, as_of: date = AS_OF, **overrides: object) -> str:
    """The flow's steps as plain functions: record, extract, fit, write. Returns the run id."""
    settings = load_settings(**backend.settings(order_id_column="order_id", **overrides))
    return run_pipeline(settings, as_of).run_id


def read(backend: Backend, table: str, order_by: str = "1") -> pd.DataFrame:
    with backend.engine().connect() as conn:
        return pd.read_sql(sa.text(f"select * from {backend.table(table)} order by {order_by}"), conn)


def test_a_run_writes_assignments_profiles_and_its_record(backend: Backend) -> None:
    load_synthetic(backend)

    run_id = run_without_prefect(backend)

    assignments = read(backend, "customer_segments")
    assert assignments["customer_id"].is_unique and assignments["customer_id"].notna().all()
    assert assignments["segment_id"].notna().all() and (assignments["run_id"] == run_id).all()
    profiles = read(backend, "segment_profiles")
    assert set(profiles["segment_id"]) == set(assignments["segment_id"])
    sizes = assignments.groupby("segment_id").size()
    assert profiles.set_index("segment_id")["customers"].to_dict() == sizes.to_dict()
    assert set(assignments["segment_name"]) == set(profiles["segment_name"])
    runs = read(backend, "segment_runs")
    assert runs["status"].tolist() == ["succeeded"]
    run = runs.iloc[0]
    assert run["customers"] == len(assignments)
    assert run["customers_clustered"] + run["customers_no_net_purchases"] == run["customers"]
    assert run["rows_scanned"] == run["rows_in_window"] + run["rows_rejected"] + run["rows_before_window"]
    assert run["n_clusters"] == len(profiles.query("segment_id > 0"))
    assert run["silhouette"] is not None and run["model_action"] == "fit"
    assert run["model_reason"] == "no stored model yet"


def test_rerunning_the_same_date_replaces_instead_of_duplicating(backend: Backend) -> None:
    load_synthetic(backend)
    first = run_without_prefect(backend)

    second = run_without_prefect(backend, n_clusters=4, model_policy="refit")

    assignments = read(backend, "customer_segments")
    assert set(assignments["run_id"]) == {second}
    profiles = read(backend, "segment_profiles")
    assert set(profiles["run_id"]) == {second}
    assert len(profiles.query("segment_id > 0")) == 4
    runs = read(backend, "segment_runs").set_index("run_id")
    assert runs.loc[first, "status"] == "superseded"
    assert runs.loc[second, "status"] == "succeeded"


def test_a_failed_write_leaves_the_previous_state_untouched(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    load_synthetic(backend)
    first = run_without_prefect(backend)
    before = read(backend, "customer_segments", "customer_id")
    profiles_before = read(backend, "segment_profiles", "segment_id")

    # The next run's rows hold a duplicate customer id: the write fails at the very end, after the
    # delete and most of the inserts ran inside the transaction.
    original = load._insert_assignments

    def insert_with_duplicate(conn, settings, tables, assignments, **where):  # type: ignore[no-untyped-def]
        original(conn, settings, tables, pd.concat([assignments, assignments.tail(1)], ignore_index=True), **where)

    monkeypatch.setattr(load, "_insert_assignments", insert_with_duplicate)
    with pytest.raises(sa.exc.IntegrityError):
        run_without_prefect(backend, n_clusters=5, model_policy="refit")

    pd.testing.assert_frame_equal(read(backend, "customer_segments", "customer_id"), before)
    pd.testing.assert_frame_equal(read(backend, "segment_profiles", "segment_id"), profiles_before)
    runs = read(backend, "segment_runs").set_index("run_id")
    assert runs.loc[first, "status"] == "succeeded"
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1 and "IntegrityError" in failed["error"].iloc[0]


def test_the_output_check_counts_duplicate_ids_unless_a_key_rules_them_out(postgres_url: str, pg_schema: str) -> None:
    # A customer_segments without a primary key (of a user's making) holding an id twice. The write
    # asks for the count except after building the swapped-in table's key, which rules duplicates out.
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend)
    run_id = run_without_prefect(backend)
    settings = load_settings(**backend.settings())
    with backend.engine().connect() as conn:
        table = f"{pg_schema}.customer_segments"
        conn.exec_driver_sql(f"alter table {table} drop constraint customer_segments_pkey")
        conn.exec_driver_sql(f"insert into {table} select * from {table} limit 1")
        tables = load.output_tables(conn, settings)

        counted = load._output_figures(conn, tables, run_id)
        skipped = load._output_figures(conn, tables, run_id, check_duplicates=False)
        conn.rollback()
    backend.dispose()

    assert counted.duplicate_customer_ids == 1
    assert skipped.duplicate_customer_ids == 0
    assert counted.customers_written == skipped.customers_written == 301


def test_the_write_transaction_has_its_memory_no_jit_and_ssd_costs(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend)
    seen: list[tuple[str, str, str]] = []
    original = load._update_history
    settings = "select current_setting('work_mem'), current_setting('jit'), current_setting('random_page_cost')"

    def noting_settings(conn, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(tuple(conn.exec_driver_sql(settings).one()))
        return original(conn, *args, **kwargs)

    monkeypatch.setattr(load, "_update_history", noting_settings)
    with backend.engine().connect() as conn:
        server_defaults = tuple(conn.exec_driver_sql(settings).one())
    run_without_prefect(backend)

    assert seen == [(load.WRITE_WORK_MEM, "off", "1.1")] != [server_defaults]
    with backend.engine().connect() as conn:  # local to the write transaction
        assert tuple(conn.exec_driver_sql(settings).one()) == server_defaults
    backend.dispose()


def test_integer_customer_ids_keep_their_type(backend: Backend) -> None:
    load_synthetic(backend, integer_ids=True)

    run_without_prefect(backend)

    inspector = sa.inspect(backend.engine())
    columns = {c["name"]: c["type"] for c in inspector.get_columns("customer_segments", schema=backend.schema)}
    assert isinstance(columns["customer_id"], sa.Integer)
    assert read(backend, "customer_segments")["customer_id"].dtype.kind == "i"


def test_a_failure_is_recorded_without_the_password(postgres_url: str, pg_schema: str) -> None:
    # The local server trusts connections, so the URL can carry a password the server ignores.
    url = sa.engine.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    settings = load_settings(database_url=url, output_schema=pg_schema)
    run_id = str(uuid.uuid4())
    load.start_run(settings, run_id=run_id, flow_run_id="flow-1", as_of=AS_OF, started_at=datetime.now(UTC))

    load.record_run_failure(settings, run_id=run_id, error=f"OperationalError: cannot reach {url}")

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        run = conn.execute(sa.text(f"select * from {pg_schema}.segment_runs")).mappings().one()
        settings_text = conn.execute(sa.text(f"select settings::text from {pg_schema}.segment_runs")).scalar_one()
    engine.dispose()
    assert run["status"] == "failed" and run["flow_run_id"] == "flow-1" and run["finished_at"] is not None
    assert "s3cret-pw" not in run["error"] and "***" in run["error"]
    assert "s3cret-pw" not in settings_text


def test_tables_of_an_earlier_release_get_the_new_columns(backend: Backend) -> None:
    load_synthetic(backend)
    with backend.engine().begin() as conn:  # segment_runs as the first release created it
        conn.exec_driver_sql(
            f"create table {backend.table('segment_runs')} (run_id text primary key, flow_run_id text, "
            "as_of date not null, started_at timestamp not null, finished_at timestamp, status text not null, "
            "model_action text, "
            "model_reason text, model_version text, n_clusters integer, k_reason text, rows_scanned bigint, "
            "rows_in_window bigint, rows_before_window bigint, rows_rejected bigint, rejected_by_reason text, "
            "customers bigint, customers_clustered bigint, customers_no_net_purchases bigint, inertia real, "
            "silhouette real, davies_bouldin real, calinski_harabasz real, elbow text, model text, settings text, "
            "error text)"
        )

    run_without_prefect(backend)

    run = read(backend, "segment_runs").iloc[0]
    assert run["status"] == "succeeded" and run["segment_changes"] is not None


def test_the_swapped_in_table_keeps_its_grants_key_and_a_users_view(postgres_url: str, pg_schema: str) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    role = f"bi_{uuid.uuid4().hex[:8]}"
    try:
        load_synthetic(backend, customers=200)
        run_without_prefect(backend)
        with backend.engine().begin() as conn:
            conn.exec_driver_sql(f'create role "{role}"')
            conn.exec_driver_sql(f'grant select on {pg_schema}.customer_segments to "{role}"')
            oid_before = conn.execute(sa.text(f"select '{pg_schema}.customer_segments'::regclass::oid")).scalar_one()

        run_without_prefect(backend, model_policy="refit")  # swapped in: a new table

        with backend.engine().begin() as conn:
            oid_after = conn.execute(sa.text(f"select '{pg_schema}.customer_segments'::regclass::oid")).scalar_one()
            can_read = conn.execute(
                sa.text(f"select has_table_privilege('{role}', '{pg_schema}.customer_segments', 'select')")
            ).scalar_one()
            key = conn.execute(
                sa.text("select conname from pg_constraint where conrelid = cast(:t as regclass) and contype = 'p'"),
                {"t": f"{pg_schema}.customer_segments"},
            ).scalar_one()
            leftovers = conn.execute(
                sa.text("select count(*) from pg_tables where schemaname = :s and tablename like '%__next'"),
                {"s": pg_schema},
            ).scalar_one()
            # COPY FREEZE: every page is all-visible before any VACUUM (the run's ANALYZE reads the map)
            pages, all_visible = conn.execute(
                sa.text("select relpages, relallvisible from pg_class where oid = cast(:t as regclass)"),
                {"t": f"{pg_schema}.customer_segments"},
            ).one()
            # a BI user's view on the table: the next run cannot drop it, so it replaces the rows instead
            conn.exec_driver_sql(
                f"create view {pg_schema}.champions as select customer_id from {pg_schema}.customer_segments"
            )
            file_before = conn.execute(
                sa.text(f"select pg_relation_filenode('{pg_schema}.customer_segments')")
            ).scalar()
        assert oid_after != oid_before and can_read and key == "customer_segments_pkey" and leftovers == 0
        assert pages > 0 and all_visible == pages

        run_without_prefect(backend, model_policy="refit", as_of=date(2024, 3, 2))

        with backend.engine().begin() as conn:
            in_view = conn.execute(sa.text(f"select count(*) from {pg_schema}.champions")).scalar_one()
            oid_kept = conn.execute(sa.text(f"select '{pg_schema}.customer_segments'::regclass::oid")).scalar_one()
            # emptied by TRUNCATE (a new file, no dead rows left behind), not by deleting every row
            file_after = conn.execute(sa.text(f"select pg_relation_filenode('{pg_schema}.customer_segments')")).scalar()
            conn.exec_driver_sql(f"drop view {pg_schema}.champions")
            conn.exec_driver_sql(f'drop owned by "{role}"')
            conn.exec_driver_sql(f'drop role "{role}"')
        assert in_view == len(read(backend, "customer_segments")) and oid_kept == oid_after
        assert file_after != file_before
    finally:
        backend.dispose()


def test_a_role_without_the_truncate_privilege_is_not_asked_to_truncate(postgres_url: str, pg_schema: str) -> None:
    """Behind a user's view the write empties customer_segments with TRUNCATE only where the job may;
    otherwise it deletes the rows, as before."""
    backend = Backend("postgresql", postgres_url, pg_schema)
    role = f"writer_{uuid.uuid4().hex[:8]}"
    try:
        load_synthetic(backend, customers=50)
        run_without_prefect(backend)
        settings = load_settings(**backend.settings(order_id_column="order_id"))
        with backend.engine().begin() as conn:
            tables = load.output_tables(conn, settings)
            conn.exec_driver_sql(f'create role "{role}"')
            conn.exec_driver_sql(f'grant usage on schema {pg_schema} to "{role}"')
            conn.exec_driver_sql(f'grant select, insert, delete on {tables.customer_segments} to "{role}"')
            as_owner = load._may_truncate(conn, tables)
            conn.exec_driver_sql(f'set local role "{role}"')
            as_writer = load._may_truncate(conn, tables)
            conn.exec_driver_sql("reset role")
            conn.exec_driver_sql(f'drop owned by "{role}"')
            conn.exec_driver_sql(f'drop role "{role}"')
        assert as_owner and not as_writer
    finally:
        backend.dispose()


def test_the_swap_fills_the_run_columns_from_defaults_and_leaves_none_behind(postgres_url: str, pg_schema: str) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=200)
    first = run_without_prefect(backend)

    run_id = run_without_prefect(backend, model_policy="refit", as_of=date(2024, 3, 2))  # swapped in

    rows = read(backend, "customer_segments")
    record = read(backend, "segment_runs").set_index("run_id").loc[run_id]
    assert first != run_id and (rows["run_id"] == run_id).all()
    assert (rows["as_of"] == date(2024, 3, 2)).all()
    assert (rows["model_version"] == str(record["model_version"])).all()
    assert rows["scored_at"].nunique() == 1 and rows["scored_at"].iloc[0] == record["started_at"]
    with backend.engine().connect() as conn:
        defaults = conn.execute(
            sa.text(
                "select count(*) from information_schema.columns "
                "where table_schema = :s and table_name = 'customer_segments' and column_default is not null"
            ),
            {"s": pg_schema},
        ).scalar_one()
    assert defaults == 0  # the run's values are in the rows, not left as the table's defaults
    backend.dispose()


def after_a_first_run(postgres_url: str, pg_schema: str, customers: int, **overrides: object) -> tuple[Backend, str]:
    """A PostgreSQL backend after a first run on ``customers`` synthetic customers, and its history table."""
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=customers)
    run_without_prefect(backend, **overrides)
    return backend, f"{pg_schema}.customer_segment_history"


def test_a_first_history_is_filled_without_its_indexes_and_gets_every_one_back(
    postgres_url: str, pg_schema: str
) -> None:
    backend, history = after_a_first_run(postgres_url, pg_schema, customers=200)
    index_query = sa.text(
        "select pg_get_indexdef(indexrelid), indexrelid from pg_index where indrelid = cast(:t as regclass) order by 1"
    )
    with backend.engine().begin() as conn:  # empty again, with a user's own index ("%" in it)
        conn.exec_driver_sql(f"delete from {history}")
        conn.exec_driver_sql(
            f"create index champions_idx on {history} (customer_id) where segment_name like '%%Champ%%'"
        )
        before = conn.execute(index_query, {"t": history}).all()

    run_without_prefect(backend, as_of=date(2024, 3, 2))

    with backend.engine().begin() as conn:
        after = conn.execute(index_query, {"t": history}).all()
        open_rows = conn.execute(sa.text(f"select count(*) from {history} where valid_to is null")).scalar_one()
    assert len(before) == 5  # key, open rows, valid_from, valid_to, the user's
    assert [row[0] for row in after] == [row[0] for row in before]  # the same definitions ...
    assert not {row[1] for row in after} & {row[1] for row in before}  # ... each built anew
    assert open_rows == len(read(backend, "customer_segments"))
    backend.dispose()


def test_a_first_history_is_copied_in_frozen_and_keeps_no_default(postgres_url: str, pg_schema: str) -> None:
    """A first run's history, created in its transaction, is loaded with COPY FREEZE: its pages are
    all-visible at once, so the next night's change detection reads the open rows from the index
    alone. The as-of date and run id, sent as column defaults, are not left as defaults."""
    backend, history = after_a_first_run(postgres_url, pg_schema, customers=300)
    with backend.engine().connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"analyze {history}")
        pages, visible = conn.execute(
            sa.text("select relpages, relallvisible from pg_class where oid = cast(:t as regclass)"), {"t": history}
        ).one()
        defaults = conn.execute(
            sa.text(
                "select column_name from information_schema.columns where table_schema = :schema "
                "and table_name = 'customer_segment_history' and column_default is not null"
            ),
            {"schema": pg_schema},
        ).all()
    rows = read(backend, "customer_segment_history", order_by="customer_id")
    assignments = read(backend, "customer_segments", order_by="customer_id")
    backend.dispose()
    assert pages > 0 and visible == pages  # frozen by the COPY (an INSERT left them for VACUUM)
    assert defaults == []
    assert rows["customer_id"].tolist() == assignments["customer_id"].tolist()
    assert rows["segment_id"].tolist() == assignments["segment_id"].tolist()
    assert rows["segment_name"].tolist() == assignments["segment_name"].tolist()
    assert (rows["valid_from"].astype(str) == str(AS_OF)).all() and rows["valid_to"].isna().all()
    assert set(rows["run_id"]) == set(assignments["run_id"]) and rows["run_id"].nunique() == 1


def test_only_a_night_that_joins_the_history_analyzes_the_new_customer_segments(
    postgres_url: str, pg_schema: str
) -> None:
    """The swapped-in table is analyzed for the history's join with it (0.16-0.18 s at 877k
    customers); a first run, whose new history is sent whole, leaves that to autovacuum."""
    from sqlalchemy import event

    backend = Backend("postgresql", postgres_url, pg_schema)
    analyzed: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("analyze") and "customer_segments" in statement:
            analyzed.append(statement)

    load_synthetic(backend, customers=200)
    event.listen(sa.Engine, "before_cursor_execute", note)
    try:
        run_without_prefect(backend)
        first_run = len(analyzed)
        run_without_prefect(backend, as_of=date(2024, 3, 2))
    finally:
        event.remove(sa.Engine, "before_cursor_execute", note)
    history = read(backend, "customer_segment_history")
    backend.dispose()
    assert first_run == 0
    assert analyzed == [f"analyze {pg_schema}.customer_segments"]
    assert len(history) >= 200  # the next night's join found every customer's open row


def test_a_night_when_many_customers_move_rebuilds_the_history_indexes_and_a_quiet_one_keeps_them(
    postgres_url: str, pg_schema: str
) -> None:
    backend, history = after_a_first_run(postgres_url, pg_schema, customers=300, n_clusters=5)
    index_query = sa.text(
        "select pg_get_indexdef(indexrelid), indexrelid from pg_index where indrelid = cast(:t as regclass) order by 1"
    )

    def night(
        as_of: date, **overrides: object
    ) -> tuple[float, list[sa.Row[tuple[str, int]]], list[sa.Row[tuple[str, int]]]]:
        """Run a night; the share of the history it wrote (rows opened or closed that night) and the
        history's indexes before and after."""
        with backend.engine().connect() as conn:
            before = conn.execute(index_query, {"t": history}).all()
            rows_before = conn.execute(sa.text(f"select count(*) from {history}")).scalar_one()
        run_without_prefect(backend, as_of=as_of, **overrides)
        with backend.engine().connect() as conn:
            after = conn.execute(index_query, {"t": history}).all()
            written = conn.execute(
                sa.text(f"select count(*) from {history} where valid_from = :d or valid_to = :d"), {"d": as_of}
            ).scalar_one()
            open_rows = pd.read_sql(
                sa.text(f"select customer_id, segment_id from {history} where valid_to is null order by 1"), conn
            )
        current = read(backend, "customer_segments", "customer_id")[["customer_id", "segment_id"]]
        pd.testing.assert_frame_equal(open_rows, current)  # the history agrees with this run either way
        return written / rows_before, before, after

    # K from 5 to 2: most customers change segment
    share, before, after = night(date(2024, 3, 2), n_clusters=2, model_policy="refit")
    assert share > load.REBUILD_HISTORY_INDEXES_ABOVE
    assert [row[0] for row in after] == [row[0] for row in before]  # the same definitions ...
    assert not {row[1] for row in after} & {row[1] for row in before}  # ... each built anew

    # the same model a day later, and three customers gone (their rows are closed): a few changes
    with backend.engine().begin() as conn:
        conn.execute(
            sa.text(
                f"delete from {backend.table('transactions')} where customer_id in ('C000001', 'C000002', 'C000003')"
            )
        )
    share, before, after = night(date(2024, 3, 3), n_clusters=2, model_policy="reuse")
    assert 0 < share < load.REBUILD_HISTORY_INDEXES_ABOVE
    assert after == before  # written through the indexes, which stay as they were
    with backend.engine().connect() as conn:  # the changes' temporary table went with the transaction
        assert conn.execute(sa.text("select to_regclass('pg_temp.customer_segment_history_changes')")).scalar() is None
    backend.dispose()


def test_the_open_rows_index_of_an_earlier_version_is_replaced_by_one_holding_the_segment(
    postgres_url: str, pg_schema: str
) -> None:
    backend, history = after_a_first_run(postgres_url, pg_schema, customers=100)
    with backend.engine().begin() as conn:  # as an earlier version left it
        conn.exec_driver_sql(f"drop index {pg_schema}.customer_segment_history_open_rows_idx")
        conn.exec_driver_sql(
            f"create index customer_segment_history_open_idx on {history} (customer_id) where valid_to is null"
        )

    run_without_prefect(backend, as_of=date(2024, 3, 2))

    with backend.engine().connect() as conn:
        indexes = dict(
            conn.execute(
                sa.text("select indexname, indexdef from pg_indexes where schemaname = :s and tablename = :t"),
                {"s": pg_schema, "t": "customer_segment_history"},
            ).all()
        )
    assert "customer_segment_history_open_idx" not in indexes
    assert indexes["customer_segment_history_open_rows_idx"].endswith(
        "USING btree (customer_id) INCLUDE (segment_id) WHERE (valid_to IS NULL)"
    )
    backend.dispose()


def test_copy_sends_the_rows_in_batches_and_loses_none(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.load as load

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=200)
    monkeypatch.setattr(load, "COPY_BATCH_ROWS", 7)  # 200 customers: 29 batches, the last one short
    settings = load_settings(**backend.settings(order_id_column="order_id"))

    run = run_pipeline(settings, AS_OF)

    written = read(backend, "customer_segments", order_by="customer_id").set_index("customer_id")
    expected = run.outcome.segments.assignments.set_index("customer_id").sort_index()
    assert len(written) == len(expected) == 200
    assert written["segment_id"].tolist() == expected["segment_id"].tolist()
    assert written["monetary"].astype(float).round(2).tolist() == expected["monetary"].round(2).tolist()
    backend.dispose()


def test_a_rerun_of_the_same_date_rewrites_only_the_history_that_changed(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    first = run_without_prefect(backend, n_clusters=4)
    history_before = read(backend, "customer_segment_history", "customer_id")
    assert set(history_before["run_id"]) == {first}

    # same model, same data, same date: every segment is the same, so no history row is rewritten
    run_without_prefect(backend, model_policy="reuse")

    history_after = read(backend, "customer_segment_history", "customer_id")
    pd.testing.assert_frame_equal(history_after, history_before)


def _plan_nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def _history_plans(*starts: str) -> tuple[list[dict], Callable[..., None]]:
    """A listener that EXPLAINs (JSON) each history statement that starts so, and what it found."""
    plans: list[dict] = []

    def explain(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        text = statement.lstrip()
        if "customer_segment_history" in statement and text.startswith(starts):
            cursor.execute("explain (format json) " + statement, parameters)
            plan = cursor.fetchone()[0][0]["Plan"]
            plan["statement"] = text
            plans.append(plan)

    return plans, explain


def _probes_only(plan: dict) -> bool:
    """Whether every nested loop of ``plan`` probes an index on its inner side (never rescans a table)."""
    loops = [node for node in _plan_nodes(plan) if node["Node Type"] == "Nested Loop"]
    return all(loop["Plans"][1]["Node Type"] in ("Index Scan", "Index Only Scan") for loop in loops)


def test_history_statements_never_plan_a_nested_loop_over_all_customers(postgres_url: str, pg_schema: str) -> None:
    """With an empty (freshly analyzed) history, an anti-join once planned a nested loop that rescanned
    the rows the statement had just inserted: minutes at 877k customers on a first run. A first run now
    sends its rows with COPY, with no statement to plan; the next night's statements join every customer
    with the history (merged), or probe an index for each of a few rows."""
    from sqlalchemy import event

    backend = Backend("postgresql", postgres_url, pg_schema)
    plans, explain = _history_plans("insert", "update", "delete", "create temporary")
    try:
        load_synthetic(backend, customers=2000)
        event.listen(sa.Engine, "before_cursor_execute", explain)
        try:
            run_without_prefect(backend)  # a first run: the history is created empty in the transaction
            first_run_plans = len(plans)
            # the next night reads a history filled by the last transaction (and analyzed since)
            run_without_prefect(backend, as_of=date(2024, 3, 2), n_clusters=3, model_policy="refit")
        finally:
            event.remove(sa.Engine, "before_cursor_execute", explain)
    finally:
        backend.dispose()
    assert first_run_plans == 0  # every customer copied in, nothing to look up
    assert len(plans) == 5  # the next night: delete, reopen, the changes, close and open
    assert all(_probes_only(plan) for plan in plans), plans
    changes = next(plan for plan in plans if plan["statement"].startswith("create"))
    full_joins = [node for node in _plan_nodes(changes) if node.get("Join Type") == "Full"]
    assert [node["Node Type"] for node in full_joins] == ["Merge Join"]  # in customer order, not hashed


def test_a_quiet_night_and_its_rerun_touch_the_history_by_index_probes(postgres_url: str, pg_schema: str) -> None:
    # On a quiet night, a hash join read the whole history to close a handful of rows (114 ms at 877k
    # customers and 1.2M history rows for 1,194 movers, growing with the history every night), and a
    # re-run's undo hashed every customer twice (178 + 205 ms); index probes took 19 ms and 7 + 5 ms.
    from sqlalchemy import event

    backend = Backend("postgresql", postgres_url, pg_schema)
    plans, explain = _history_plans("update", "delete")
    try:
        load_synthetic(backend, customers=2000)
        run_without_prefect(backend, n_clusters=3, model_policy="refit")
        with backend.engine().begin() as conn:  # the last three customers (in key order) buy a lot: they move
            conn.execute(
                sa.text(
                    f"insert into {backend.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                    "select customer_id, 'big-' || customer_id, timestamp '2024-03-01 12:00', 50000 "
                    f"from (select distinct customer_id from {backend.table('transactions')} "
                    "order by customer_id desc limit 3) as buyers"
                )
            )
        run_without_prefect(backend, as_of=date(2024, 3, 2), model_policy="reuse")
        event.listen(sa.Engine, "before_cursor_execute", explain)
        try:
            run_without_prefect(backend, as_of=date(2024, 3, 2), model_policy="reuse")  # a re-run of the date
        finally:
            event.remove(sa.Engine, "before_cursor_execute", explain)
        with backend.engine().connect() as conn:
            moved = conn.execute(
                sa.text(f"select count(*) from {backend.table('customer_segment_history')} where valid_to is not null")
            ).scalar_one()
    finally:
        backend.dispose()
    assert 1 <= moved <= 100  # a quiet night: few of the 2,000 customers moved
    assert [plan["statement"].split()[0] for plan in plans] == ["delete", "update", "update"]  # undo x2, close
    for plan in plans:
        loops = [node for node in _plan_nodes(plan) if node["Node Type"] == "Nested Loop"]
        assert len(loops) == 1 and _probes_only(plan), (plan["statement"], plan)
    assert loops[0]["Plans"][1]["Index Name"] == "customer_segment_history_open_rows_idx"  # the close
