"""Faults injected into a real job process on PostgreSQL: the previous segments stay intact and
consistent, the failed run is recorded (or detected as abandoned), and the next run succeeds.

The job is stopped at a known point without any hook in its code: the test holds a row lock on the
previous run's record, which the write transaction updates last (marking it superseded), so the job
blocks inside its write transaction after replacing the assignments, history and profiles.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.settings import load_settings
from tests.sql.test_customer_features import assert_features_equal, features_by_customer
from tests.support.backend import Backend
from tests.support.reference import reference_features
from tests.support.shop import AS_OF, load_synthetic, run_on

pytestmark = pytest.mark.e2e
JOB = f"""
from flows.wiring import run_segmentation
from tasks.settings import load_settings
run_segmentation(load_settings(model_policy="refit", n_clusters=5, as_of="{AS_OF.isoformat()}"))
print("job finished")
"""


@pytest.fixture
def shop(postgres_url: str, pg_schema: str) -> Iterator[Backend]:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=300)
    yield backend
    backend.dispose()


def env_for(backend: Backend) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SEGMENTS_")}
    return environment | {
        "SEGMENTS_DATABASE_URL": backend.url,
        "SEGMENTS_SOURCE_TABLE": f"{backend.schema}.transactions",
        "SEGMENTS_OUTPUT_SCHEMA": str(backend.schema),
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
        "SEGMENTS_REPORT_PATH": "",
    }


def settings_of(backend: Backend, **overrides: object):  # type: ignore[no-untyped-def]
    return load_settings(**backend.settings(order_id_column="order_id", **overrides))


def snapshot(backend: Backend) -> dict[str, pd.DataFrame]:
    with backend.engine().connect() as conn:
        return {
            table: pd.read_sql(sa.text(f"select * from {backend.schema}.{table} order by {order}"), conn)
            for table, order in (
                ("customer_segments", "customer_id"),
                ("customer_segment_history", "customer_id, valid_from"),
                ("segment_profiles", "run_id, segment_id"),
                ("segment_models", "model_version"),
                ("customer_feature_state", "customer_id"),
            )
        }


def assert_consistent(backend: Backend) -> None:
    """History's open rows are exactly the assignments; profiles add up to them."""
    tables = snapshot(backend)
    current = tables["customer_segments"].set_index("customer_id")["segment_id"]
    history = tables["customer_segment_history"]
    open_rows = history[history["valid_to"].isna()].set_index("customer_id")["segment_id"]
    assert open_rows.sort_index().equals(current.sort_index())
    run_id = tables["customer_segments"]["run_id"].iloc[0]
    profiles = tables["segment_profiles"]
    assert profiles.loc[profiles["run_id"] == run_id, "customers"].sum() == len(current)


def runs(backend: Backend) -> pd.DataFrame:
    with backend.engine().connect() as conn:
        return pd.read_sql(sa.text(f"select * from {backend.schema}.segment_runs order by started_at"), conn)


def start_job(backend: Backend, tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", JOB],
        env=env_for(backend) | env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_until_blocked(backend: Backend, job: subprocess.Popen[str], timeout: float = 90) -> int:
    """The server process id of the job's connection once it waits on our lock."""
    deadline = time.monotonic() + timeout
    with backend.engine().connect() as conn:
        while time.monotonic() < deadline:
            pid = conn.execute(
                sa.text(
                    "select pid from pg_stat_activity where application_name = 'customer-segments' "
                    "and wait_event_type = 'Lock' and query like 'UPDATE%segment_runs%'"
                )
            ).scalar()
            if pid is not None:
                return int(pid)
            assert job.poll() is None, f"job ended before blocking: {job.communicate()}"
            time.sleep(0.2)
            conn.rollback()
    raise AssertionError("the job never reached its write transaction")


def hold_previous_run(backend: Backend, run_id: str) -> sa.Connection:
    conn = backend.engine().connect()
    conn.execute(sa.text(f"select 1 from {backend.schema}.segment_runs where run_id = :r for update"), {"r": run_id})
    return conn


def job_blocked_in_its_write(
    shop: Backend, tmp_path: Path, between: Callable[[], None] = lambda: None, **env: str
) -> tuple[dict[str, pd.DataFrame], sa.Connection, subprocess.Popen[str], int]:
    """A first successful run, then (after ``between``) a refitting job stopped inside its write
    transaction by a row lock the test holds. Returns the first run's tables, the lock, the job and
    its server process id."""
    first = run_on(
        settings_of(shop, **{key.removeprefix("SEGMENTS_").lower(): value for key, value in env.items()}), AS_OF
    ).run_id
    between()
    before = snapshot(shop)
    lock = hold_previous_run(shop, first)
    job = start_job(shop, tmp_path, **env)
    try:
        return before, lock, job, wait_until_blocked(shop, job)
    except BaseException:
        # release the row lock, or the schema's teardown (DROP SCHEMA) would wait on it forever
        lock.close()
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        raise


def kill_blocked_job(shop: Backend, lock: sa.Connection, job: subprocess.Popen[str], backend_pid: int) -> None:
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)
    lock.rollback()  # let the orphaned server process go on; it finds its client gone and rolls back
    lock.close()
    with shop.engine().connect() as conn:
        for _ in range(100):
            if not conn.execute(
                sa.text("select count(*) from pg_stat_activity where pid = :p"), {"p": backend_pid}
            ).scalar():
                break
            time.sleep(0.1)
            conn.rollback()


def test_sigkill_during_the_write_leaves_the_previous_segments(shop: Backend, tmp_path: Path) -> None:
    before, lock, job, backend_pid = job_blocked_in_its_write(shop, tmp_path)

    kill_blocked_job(shop, lock, job, backend_pid)

    after = snapshot(shop)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(after[table], frame, obj=table)
    assert runs(shop)["status"].tolist() == ["succeeded", "running"]  # the killed run could not say more

    run_on(settings_of(shop), AS_OF)
    statuses = runs(shop)
    assert statuses["status"].tolist() == ["superseded", "failed", "succeeded"]
    assert statuses["error"].iloc[1].startswith("abandoned")
    assert_consistent(shop)


def test_a_terminated_connection_mid_write_is_recorded_and_changes_nothing(shop: Backend, tmp_path: Path) -> None:
    before, lock, job, backend_pid = job_blocked_in_its_write(shop, tmp_path)

    with shop.engine().connect() as conn:
        assert conn.execute(sa.text("select pg_terminate_backend(:p)"), {"p": backend_pid}).scalar()
    _, stderr = job.communicate(timeout=60)
    lock.rollback()
    lock.close()

    assert job.returncode != 0 and "DatabaseUnavailableError" in stderr
    after = snapshot(shop)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(after[table], frame, obj=table)
    statuses = runs(shop)
    assert statuses["status"].tolist() == ["succeeded", "failed"]
    assert "cannot connect" in statuses["error"].iloc[1] or "terminat" in statuses["error"].iloc[1]

    run_on(settings_of(shop), AS_OF)
    assert runs(shop)["status"].tolist() == ["superseded", "failed", "succeeded"]
    assert_consistent(shop)


def test_sigkill_just_after_the_commit_leaves_the_new_segments_consistent(shop: Backend, tmp_path: Path) -> None:
    run_on(settings_of(shop), AS_OF)

    job = start_job(shop, tmp_path)
    deadline = time.monotonic() + 90
    while True:  # until the job's own run is committed as succeeded
        current = runs(shop)
        if len(current) == 2 and current["status"].iloc[-1] == "succeeded":
            break
        assert time.monotonic() < deadline and job.poll() in (None, 0)
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)

    statuses = runs(shop)
    assert statuses["status"].tolist() == ["superseded", "succeeded"]
    assert set(snapshot(shop)["customer_segments"]["run_id"]) == {statuses["run_id"].iloc[1]}
    assert_consistent(shop)
    run_on(settings_of(shop), AS_OF)
    assert runs(shop)["status"].tolist() == ["superseded", "superseded", "succeeded"]
    assert_consistent(shop)


def test_an_incremental_night_killed_between_its_state_and_its_segments_changes_none(
    shop: Backend, tmp_path: Path
) -> None:
    with shop.engine().begin() as conn:  # a load sequence: every row inserted from now on gets a later value
        conn.exec_driver_sql(f"alter table {shop.table('transactions')} add column loaded_seq bigserial")

    def load_a_night() -> None:
        with shop.engine().begin() as conn:
            conn.execute(
                sa.text(
                    f"insert into {shop.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                    "select customer_id, order_id, occurred_at - interval '1 day', -amount from "
                    f"{shop.table('transactions')} where customer_id is not null and amount > 0 "
                    "and occurred_at < :as_of order by loaded_seq limit 5"
                ),
                {"as_of": AS_OF},
            )
            conn.execute(
                sa.text(
                    f"insert into {shop.table('transactions')} (customer_id, order_id, occurred_at, amount) "
                    "values ('C999001', 'O-NEW', :at, 25.00)"
                ),
                {"at": datetime.combine(AS_OF, datetime.min.time()) - timedelta(hours=6)},
            )

    before, lock, job, backend_pid = job_blocked_in_its_write(
        shop, tmp_path, load_a_night, SEGMENTS_CHANGED_AT_COLUMN="loaded_seq"
    )
    assert len(before["customer_feature_state"]) > 250  # the first run kept its state
    watermark = runs(shop)["watermark"].iloc[0]

    kill_blocked_job(shop, lock, job, backend_pid)  # after it replaced the state, before it committed

    after = snapshot(shop)
    for table in ("customer_feature_state", "customer_segments", "customer_segment_history"):
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)
    assert runs(shop)["watermark"].iloc[0] == watermark and pd.isna(runs(shop)["watermark"].iloc[1])
    night = run_on(settings_of(shop, changed_at_column="loaded_seq"), AS_OF)
    assert night.extract.state is not None and night.extract.state.mode == "incremental"
    with shop.engine().connect() as conn:
        rows = pd.read_sql(sa.text(f"select * from {shop.table('transactions')}"), conn)
    expected = reference_features(rows, AS_OF)
    assert expected["C999001"][1] == 1
    assert_features_equal(features_by_customer(night.extract.features), expected)
    assert_consistent(shop)
