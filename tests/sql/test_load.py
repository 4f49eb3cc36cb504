"""Writing a run's outputs: atomic, idempotent per as-of date, nothing lost on failure, and the objects
users add to customer_segments kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.errors import SourceError
from tasks.load import write
from tasks.load.runs import record_run_failure, start_run
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic, read, run_once


def test_a_run_writes_assignments_profiles_and_its_record(backend: Backend) -> None:
    load_synthetic(backend)

    run_id = run_once(backend)

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
    assert run["rows_scanned"] == (
        run["rows_in_window"] + run["rows_rejected"] + run["rows_before_window"] + run["guest_rows"]
    )
    assert run["n_clusters"] == len(profiles.query("segment_id > 0"))
    assert run["silhouette"] is not None and run["model_action"] == "fit"
    assert run["model_reason"] == "no stored model yet"


def test_every_row_carries_the_runs_date_id_model_and_time(backend: Backend) -> None:
    load_synthetic(backend, customers=200)
    run_once(backend)

    run_id = run_once(backend, model_policy="refit", as_of=date(2024, 3, 2))

    rows = read(backend, "customer_segments")
    record = read(backend, "segment_runs").set_index("run_id").loc[run_id]
    assert (rows["run_id"] == run_id).all()
    assert (pd.to_datetime(rows["as_of"]).dt.date == date(2024, 3, 2)).all()
    assert (rows["model_version"] == str(record["model_version"])).all()
    scored_at = pd.to_datetime(rows["scored_at"], utc=True)  # SQLite keeps UTC times without their zone
    started_at = pd.to_datetime(pd.Series([record["started_at"]]), utc=True).iloc[0]
    assert scored_at.nunique() == 1 and scored_at.iloc[0] == started_at


def test_rerunning_the_same_date_replaces_instead_of_duplicating(backend: Backend) -> None:
    load_synthetic(backend)
    first = run_once(backend)

    second = run_once(backend, n_clusters=4, model_policy="refit")

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
    first = run_once(backend)
    before = read(backend, "customer_segments", "customer_id")
    profiles_before = read(backend, "segment_profiles", "segment_id")
    history_before = read(backend, "customer_segment_history", "customer_id")

    # The next run's rows hold a duplicate customer id: the write fails after emptying the table and
    # writing most of the rows inside the transaction.
    original = write.replace_assignments

    def with_a_duplicate(conn, settings, tables, assignments, *args, **kwargs):  # type: ignore[no-untyped-def]
        duplicated = pd.concat([assignments, assignments.tail(1)], ignore_index=True)
        return original(conn, settings, tables, duplicated, *args, **kwargs)

    monkeypatch.setattr(write, "replace_assignments", with_a_duplicate)
    with pytest.raises(sa.exc.IntegrityError):
        run_once(backend, n_clusters=5, model_policy="refit", as_of=date(2024, 3, 2))

    pd.testing.assert_frame_equal(read(backend, "customer_segments", "customer_id"), before)
    pd.testing.assert_frame_equal(read(backend, "segment_profiles", "segment_id"), profiles_before)
    pd.testing.assert_frame_equal(read(backend, "customer_segment_history", "customer_id"), history_before)
    runs = read(backend, "segment_runs").set_index("run_id")
    assert runs.loc[first, "status"] == "succeeded"
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1 and "IntegrityError" in failed["error"].iloc[0]


def test_integer_customer_ids_keep_their_type(backend: Backend) -> None:
    load_synthetic(backend, integer_ids=True)

    run_once(backend)

    inspector = sa.inspect(backend.engine())
    columns = {c["name"]: c["type"] for c in inspector.get_columns("customer_segments", schema=backend.schema)}
    assert isinstance(columns["customer_id"], sa.Integer)
    assert read(backend, "customer_segments")["customer_id"].dtype.kind == "i"


def test_a_failure_is_recorded_without_the_password(postgres_url: str, pg_schema: str) -> None:
    # The local server trusts connections, so the URL can carry a password the server ignores.
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend)
    url = sa.engine.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    settings = load_settings(database_url=url, output_schema=pg_schema, source_table=f"{pg_schema}.transactions")
    run_id = str(uuid.uuid4())
    start_run(settings, run_id=run_id, flow_run_id="flow-1", as_of=AS_OF, started_at=datetime.now(UTC))

    record_run_failure(settings, run_id=run_id, error=f"OperationalError: cannot reach {url}")

    with backend.engine().connect() as conn:
        run = conn.execute(sa.text(f"select * from {pg_schema}.segment_runs")).mappings().one()
        settings_text = conn.execute(sa.text(f"select settings::text from {pg_schema}.segment_runs")).scalar_one()
    assert run["status"] == "failed" and run["flow_run_id"] == "flow-1" and run["finished_at"] is not None
    assert "s3cret-pw" not in run["error"] and "***" in run["error"]
    assert "s3cret-pw" not in settings_text


def test_a_rerun_of_the_same_date_gives_the_history_of_one_run_of_that_date(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    first = run_once(backend, n_clusters=4)
    history_before = read(backend, "customer_segment_history", "customer_id")
    assert set(history_before["run_id"]) == {first}
    entries_before = read(backend, "customer_segments", "customer_id")[["customer_id", "segment_since"]]

    # same model, same data, same date: the same history, its rows now naming the run that replaced the first
    rerun = run_once(backend, model_policy="reuse")

    history_after = read(backend, "customer_segment_history", "customer_id")
    assert set(history_after["run_id"]) == {rerun}
    columns = ["customer_id", "segment_id", "segment_name", "valid_from", "valid_to"]
    pd.testing.assert_frame_equal(history_after[columns], history_before[columns])
    entries_after = read(backend, "customer_segments", "customer_id")[["customer_id", "segment_since"]]
    pd.testing.assert_frame_equal(entries_after, entries_before)


def test_the_history_follows_every_move_and_every_customer_gone(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend, n_clusters=5)

    run_once(backend, n_clusters=2, model_policy="refit", as_of=date(2024, 3, 2))  # most customers move
    with backend.engine().begin() as conn:  # three customers' rows gone from the source
        conn.execute(
            sa.text(
                f"delete from {backend.table('transactions')} where customer_id in ('C000001', 'C000002', 'C000003')"
            )
        )
    run_once(backend, n_clusters=2, model_policy="reuse", as_of=date(2024, 3, 3))

    history = read(backend, "customer_segment_history", "customer_id, valid_from")
    open_rows = history[history["valid_to"].isna()][["customer_id", "segment_id"]].reset_index(drop=True)
    current = read(backend, "customer_segments", "customer_id")[["customer_id", "segment_id"]]
    pd.testing.assert_frame_equal(open_rows, current)
    gone = history[history["customer_id"].isin(["C000001", "C000002", "C000003"])]
    assert len(gone) >= 3 and gone["valid_to"].notna().all()
    assert history.groupby("customer_id")["valid_to"].apply(lambda ends: ends.isna().sum()).max() == 1


# --- what a BI team adds to customer_segments survives every run (PostgreSQL) ----------------------


@pytest.fixture
def written(postgres_url: str, pg_schema: str) -> Iterator[Backend]:
    """A PostgreSQL schema after a first run: customer_segments exists for a BI team to add to."""
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=200)
    run_once(backend)
    yield backend
    backend.dispose()


def next_night(backend: Backend) -> None:
    """The next night's run, a refit: every row of customer_segments is written again."""
    run_once(backend, model_policy="refit", as_of=date(2024, 3, 2))


@pytest.fixture
def role(written: Backend) -> Iterator[str]:
    """A login role of the test's own, with usage on its schema; dropped with what it owns afterwards."""
    name = f"bi_{uuid.uuid4().hex[:8]}"
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f'create role "{name}" login')
        conn.exec_driver_sql(f'grant usage on schema {written.schema} to "{name}"')
    yield name
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f'drop owned by "{name}"')
        conn.exec_driver_sql(f'drop role "{name}"')


def scalar(backend: Backend, sql: str, **params: object) -> object:
    with backend.engine().connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def test_a_users_index_on_customer_segments_survives_a_run(written: Backend) -> None:
    table = written.table("customer_segments")
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f"create index bi_segment_idx on {table} (segment_id)")

    next_night(written)

    index = f"{written.schema}.bi_segment_idx"
    assert scalar(written, "select pg_get_indexdef(cast(:i as regclass))", i=index).endswith("(segment_id)")
    assert scalar(written, "select indisvalid from pg_index where indexrelid = cast(:i as regclass)", i=index) is True


def test_a_users_comment_on_customer_segments_survives_a_run(written: Backend) -> None:
    table = written.table("customer_segments")
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f"comment on table {table} is 'Current segment per customer (BI team)'")
        conn.exec_driver_sql(f"comment on column {table}.segment_name is 'Marketing name'")

    next_night(written)

    assert scalar(written, "select obj_description(cast(:t as regclass))", t=table) == (
        "Current segment per customer (BI team)"
    )
    assert scalar(written, "select col_description(cast(:t as regclass), 3)", t=table) == "Marketing name"


def test_a_users_grant_on_customer_segments_survives_a_run(written: Backend, role: str) -> None:
    table = written.table("customer_segments")
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f'grant select on {table} to "{role}"')

    next_night(written)

    assert scalar(written, "select has_table_privilege(:r, cast(:t as regclass), 'select')", r=role, t=table)


def test_a_users_trigger_on_customer_segments_survives_a_run_and_sees_its_rows(written: Backend) -> None:
    schema, table = written.schema, written.table("customer_segments")
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f"create table {schema}.segment_feed (customer_id text, segment_id integer)")
        conn.exec_driver_sql(
            f"create function {schema}.feed_segment() returns trigger language plpgsql as $$ begin "
            f"insert into {schema}.segment_feed values (new.customer_id, new.segment_id); return new; end $$"
        )
        conn.exec_driver_sql(
            f"create trigger feed_segment after insert on {table} for each row execute function {schema}.feed_segment()"
        )

    next_night(written)

    assert scalar(written, "select count(*) from pg_trigger where tgname = 'feed_segment'") == 1
    assert scalar(written, f"select count(*) from {schema}.segment_feed") == len(read(written, "customer_segments"))


def test_a_users_row_level_policy_on_customer_segments_survives_a_run(written: Backend, role: str) -> None:
    table = written.table("customer_segments")
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f'grant select on {table} to "{role}"')
        conn.exec_driver_sql(f"alter table {table} enable row level security")
        conn.exec_driver_sql(f'create policy only_segment_one on {table} for select to "{role}" using (segment_id = 1)')

    next_night(written)

    with written.engine().begin() as conn:
        policies = conn.execute(sa.text("select policyname from pg_policies where tablename = 'customer_segments'"))
        assert policies.scalars().all() == ["only_segment_one"]
        conn.exec_driver_sql(f'set local role "{role}"')
        seen = set(conn.execute(sa.text(f"select distinct segment_id from {table}")).scalars())
    assert seen == {1}


def test_a_users_view_on_customer_segments_survives_a_run_and_shows_the_new_rows(written: Backend) -> None:
    with written.engine().begin() as conn:
        table = written.table("customer_segments")
        conn.exec_driver_sql(f"create view {written.schema}.champions as select customer_id, run_id from {table}")

    next_night(written)

    latest = read(written, "segment_runs", "finished_at desc").iloc[0]["run_id"]
    assert scalar(written, f"select count(distinct run_id) from {written.schema}.champions") == 1
    assert scalar(written, f"select min(run_id) from {written.schema}.champions") == latest


def test_a_role_that_may_not_delete_from_customer_segments_gets_one_line_and_nothing_written(
    written: Backend, role: str
) -> None:
    with written.engine().begin() as conn:
        conn.exec_driver_sql(f'grant select, insert, update on all tables in schema {written.schema} to "{role}"')
        conn.exec_driver_sql(f'grant delete on all tables in schema {written.schema} to "{role}"')
        conn.exec_driver_sql(f'revoke delete on {written.schema}.customer_segments from "{role}"')
    before = read(written, "customer_segments", "customer_id")
    url = sa.engine.make_url(written.url).set(username=role).render_as_string(hide_password=False)

    with pytest.raises(SourceError, match="grant it DELETE"):
        run_once(Backend("postgresql", url, written.schema), model_policy="refit", as_of=date(2024, 3, 2))

    pd.testing.assert_frame_equal(read(written, "customer_segments", "customer_id"), before)


def test_each_customer_carries_the_segment_they_moved_from_and_since_when(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend, n_clusters=4, model_policy="refit")
    first = read(backend, "customer_segments", "customer_id").set_index("customer_id")
    assert first["previous_segment_id"].isna().all() and first["previous_segment_name"].isna().all()
    assert (pd.to_datetime(first["segment_since"]).dt.date == AS_OF).all()
    # the least valuable customer of segment 1's opposite buys big the next day: they move
    mover = first.sort_values(["frequency", "monetary"]).index[0]
    with backend.engine().begin() as conn:
        conn.execute(
            sa.text(
                f"insert into {backend.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                "values (:customer, :order, :at, 90000)"
            ),
            [
                {
                    "customer": mover,
                    "order": f"big-{number}",
                    "at": datetime(2024, 3, 1, 12) + timedelta(minutes=number),
                }
                for number in range(30)
            ],
        )

    run_once(backend, model_policy="reuse", as_of=date(2024, 3, 2))

    second = read(backend, "customer_segments", "customer_id").set_index("customer_id")
    moved = second.loc[mover]
    assert moved["segment_id"] != first.loc[mover, "segment_id"]
    assert moved["previous_segment_id"] == first.loc[mover, "segment_id"]
    assert moved["previous_segment_name"] == first.loc[mover, "segment_name"]
    assert pd.Timestamp(moved["segment_since"]).date() == date(2024, 3, 2)
    stayed = second.index[(second["segment_id"] == first["segment_id"].reindex(second.index)).to_numpy()]
    assert len(stayed) > 200
    assert second.loc[stayed, "previous_segment_id"].isna().all()
    assert (pd.to_datetime(second.loc[stayed, "segment_since"]).dt.date == AS_OF).all()


def test_readers_read_the_previous_rows_during_a_write_without_waiting(
    written: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = read(written, "customer_segments", "customer_id")
    customer = before["customer_id"].iloc[0]
    seen: dict[str, object] = {}
    original = write.check_output

    def read_while_writing(*args, **kwargs):  # type: ignore[no-untyped-def]
        # the run's transaction has replaced every row by now; a BI query and a lookup from another
        # session, each given two seconds, must get the previous rows at once
        reader = sa.create_engine(written.url)
        try:
            with reader.connect() as conn:
                conn.exec_driver_sql("set statement_timeout = '2s'")
                table = written.table("customer_segments")
                seen["count"], seen["runs"] = conn.execute(
                    sa.text(f"select count(*), array_agg(distinct run_id) from {table}")
                ).one()
                seen["lookup"] = conn.execute(
                    sa.text(f"select run_id from {table} where customer_id = :id"), {"id": customer}
                ).scalar_one()
        finally:
            reader.dispose()
        return original(*args, **kwargs)

    monkeypatch.setattr(write, "check_output", read_while_writing)
    next_night(written)

    assert seen["count"] == len(before)
    assert seen["runs"] == list(before["run_id"].unique()) and seen["lookup"] == before["run_id"].iloc[0]
    after = read(written, "customer_segments", "customer_id")
    assert set(after["run_id"]) != set(before["run_id"])  # and the run's rows are there after its commit


def assert_rows_follow_the_history(backend: Backend) -> None:
    """Every customer's row names the segment of their one open history row, the date it opened and the
    segment of the row it followed."""
    history = read(backend, "customer_segment_history", "customer_id, valid_from")
    assert history.groupby("customer_id")["valid_to"].apply(lambda ends: ends.isna().sum()).max() == 1
    open_rows = history[history["valid_to"].isna()].set_index("customer_id")
    closed = history[history["valid_to"].notna()].set_index(["customer_id", "valid_to"])
    current = read(backend, "customer_segments", "customer_id").set_index("customer_id")
    assert sorted(open_rows.index) == sorted(current.index)
    for customer, row in current.iterrows():
        opened = open_rows.loc[customer]
        assert row["segment_id"] == opened["segment_id"]
        assert pd.Timestamp(row["segment_since"]) == pd.Timestamp(opened["valid_from"])
        key = (customer, opened["valid_from"])
        previous = closed.loc[key, "segment_id"] if key in closed.index else None
        assert (None if pd.isna(row["previous_segment_id"]) else row["previous_segment_id"]) == previous


def test_the_night_after_a_backfill_brings_the_rows_back_in_line_with_the_history(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend, n_clusters=4, model_policy="refit", as_of=date(2024, 3, 2))
    # a backfill: the history is left as it was, the rows hold the older date's segments
    run_once(backend, n_clusters=2, model_policy="refit", as_of=date(2024, 2, 20))
    backfilled = read(backend, "customer_segments", "customer_id")
    assert backfilled["segment_since"].isna().all()

    run_once(backend, n_clusters=3, model_policy="refit", as_of=date(2024, 3, 3))

    assert_rows_follow_the_history(backend)


def test_a_rerun_of_a_date_where_customers_moved_keeps_rows_and_history_in_line(backend: Backend) -> None:
    load_synthetic(backend, customers=300)
    run_once(backend, n_clusters=4, model_policy="refit")
    run_once(backend, n_clusters=2, model_policy="refit", as_of=date(2024, 3, 2))  # most customers move
    with backend.engine().begin() as conn:  # a customer gone from the source before the re-run
        conn.execute(sa.text(f"delete from {backend.table('transactions')} where customer_id = 'C000001'"))

    run_once(backend, n_clusters=5, model_policy="refit", as_of=date(2024, 3, 2))

    assert_rows_follow_the_history(backend)
    history = read(backend, "customer_segment_history", "customer_id, valid_from")
    assert set(history["valid_from"].astype(str)) <= {"2024-03-01", "2024-03-02"}
    assert history[history["customer_id"] == "C000001"]["valid_to"].notna().all()


def test_nights_do_not_pile_up_the_rows_they_replaced(written: Backend) -> None:
    def size() -> int:
        with written.engine().connect() as conn:
            table = written.table("customer_segments")
            return int(conn.execute(sa.text("select pg_relation_size(:t)"), {"t": table}).scalar_one())

    after_first = size()
    for day in range(2, 6):  # each night replaces every row
        run_once(written, as_of=date(2024, 3, day))

    # the replaced rows were reclaimed after each commit (whether or not the server runs autovacuum):
    # the table holds one night's rows and the free space of the night before, not four nights' rows
    assert size() <= 2 * after_first
