"""Runs never interleave, and a run left behind by a dead process is found and marked."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from tasks.database import is_transient
from tasks.errors import LockTimeoutError
from tasks.load.runs import start_run
from tasks.locking import RunInProgressError, run_lock
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic, read, run_once


def test_a_second_run_stops_at_once_while_one_holds_the_output(backend: Backend) -> None:
    load_synthetic(backend)
    settings = load_settings(**backend.settings())

    with run_lock(settings):
        with pytest.raises(RunInProgressError, match="another run is writing to") as raised:
            run_once(backend)
        if backend.name == "postgresql":
            assert "server process" in str(raised.value) and "customer-segments" in str(raised.value)

    run_once(backend)  # the lock is gone with its holder
    assert read(backend, "segment_runs")["status"].tolist() == ["succeeded"]


def test_a_run_left_running_by_a_dead_process_is_marked_failed(backend: Backend) -> None:
    load_synthetic(backend)
    settings = load_settings(**backend.settings())
    dead = str(uuid.uuid4())
    start_run(settings, run_id=dead, flow_run_id=None, as_of=AS_OF, started_at=datetime.now(UTC))

    run_once(backend)

    runs = read(backend, "segment_runs").set_index("run_id")
    assert runs.loc[dead, "status"] == "failed"
    assert runs.loc[dead, "error"].startswith("abandoned")
    assert (runs["status"] == "succeeded").sum() == 1


def test_two_runs_at_once_never_interleave(backend: Backend) -> None:
    load_synthetic(backend, customers=500)
    outcomes: list[str] = []

    def attempt(k: int) -> None:
        try:
            run_once(backend, n_clusters=k, model_policy="refit")
            outcomes.append("succeeded")
        except RunInProgressError:
            outcomes.append("stopped")

    threads = [threading.Thread(target=attempt, args=(k,)) for k in (3, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # Whichever order the threads got, one run's rows only, and no run left half done.
    assert "succeeded" in outcomes and len(outcomes) == 2
    assignments = read(backend, "customer_segments")
    assert assignments["run_id"].nunique() == 1
    runs = read(backend, "segment_runs").set_index("run_id")
    assert len(runs) == outcomes.count("succeeded")
    assert (runs["status"] == "succeeded").sum() == 1
    assert runs.loc[assignments["run_id"].iloc[0], "status"] == "succeeded"
    assert set(runs["status"]) <= {"succeeded", "superseded"}


def test_serialization_failures_and_lost_connections_are_transient_missing_tables_are_not(
    postgres_url: str, pg_schema: str
) -> None:
    import sqlalchemy as sa

    from tasks.database import connection_errors, is_transient
    from tasks.errors import DatabaseUnavailableError, SourceError
    from tasks.extract.source import check_source

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:  # real errors from the server, not hand-made ones
        with pytest.raises(sa.exc.DBAPIError) as serialization:
            conn.exec_driver_sql("do $$ begin raise exception using errcode = '40001'; end $$")
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError) as deadlock:
            conn.exec_driver_sql("do $$ begin raise exception using errcode = '40P01'; end $$")
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError) as missing:
            conn.exec_driver_sql(f"select * from {pg_schema}.nowhere")
    engine.dispose()
    unreachable = "postgresql+psycopg://x@127.0.0.1:1/none"
    with pytest.raises(DatabaseUnavailableError) as refused, connection_errors(unreachable):
        sa.create_engine(unreachable).connect()
    with pytest.raises(SourceError) as no_table:
        check_source(load_settings(database_url=postgres_url, source_table=f"{pg_schema}.nowhere"))

    assert is_transient(serialization.value) and is_transient(deadlock.value) and is_transient(refused.value)
    assert not is_transient(missing.value) and not is_transient(no_table.value)


def test_a_write_behind_an_index_build_gives_up_after_the_lock_timeout_and_writes_nothing(
    postgres_url: str, pg_schema: str
) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=100)
    first = run_once(backend)
    reader = backend.engine().connect()  # a long BI query does not hold the write up
    reader.execute(sa.text(f"select count(*) from {backend.table('customer_segments')}"))
    first = run_once(backend, as_of=date(2024, 3, 1), lock_timeout_seconds=0.5)
    reader.rollback()
    # a BI team's CREATE INDEX (not CONCURRENTLY) still building: a share lock, which writes wait for
    reader.exec_driver_sql(f"lock table {backend.table('customer_segments')} in share mode")
    # Without a lock timeout the write would wait for it, which lets go after 20 s
    release = threading.Timer(20, reader.rollback)
    release.start()
    try:
        with pytest.raises(LockTimeoutError, match="SEGMENTS_LOCK_TIMEOUT_SECONDS") as raised:
            run_once(backend, as_of=date(2024, 3, 2), lock_timeout_seconds=0.5)
    finally:
        release.cancel()
        reader.rollback()
        reader.close()
    assert "more than 0.5 s" in str(raised.value) and is_transient(raised.value)
    assert set(read(backend, "customer_segments")["run_id"]) == {first}  # nothing was written
    runs = read(backend, "segment_runs").set_index("as_of")
    assert runs.loc[date(2024, 3, 2), "status"] == "failed"

    run_once(backend, as_of=date(2024, 3, 2), lock_timeout_seconds=0.5)  # the reader is gone

    assert set(read(backend, "customer_segments")["as_of"]) == {date(2024, 3, 2)}
    backend.dispose()
