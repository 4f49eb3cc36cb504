"""The nightly deployment on a real Prefect server: deploy, run from the API as the UI does, with a
worker of the process pool, and the concurrency limit cancelling a second run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.support.backend import Backend
from tests.support.prefect_server import (
    BIN,
    REPO,
    assert_the_run_form_explains_every_parameter,
    free_port,
    prefect_cli,
    stop,
    wait_for,
)
from tests.support.shop import AS_OF, load_synthetic

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def wait_for_final_state(client, flow_run_id: uuid.UUID, timeout: float = 240) -> str:  # type: ignore[no-untyped-def]
    state = wait_for(
        lambda: client.read_flow_run(flow_run_id).state,
        lambda state: state is not None and state.type.value in FINAL,
        timeout,
        f"a final state of flow run {flow_run_id}",
    )
    return str(state.type.value)


def test_the_nightly_deployment_runs_from_the_api_on_a_worker(
    prefect_server: dict[str, str], postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=400)
    env = prefect_server | {
        "SEGMENTS_DATABASE_URL": postgres_url,
        "SEGMENTS_SOURCE_TABLE": f"{pg_schema}.transactions",
        "SEGMENTS_OUTPUT_SCHEMA": pg_schema,
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
        "SEGMENTS_REPORT_PATH": str(tmp_path / "report.html"),  # the worker runs in the repository
    }
    prefect_cli(env, "work-pool", "create", "segments-process", "--type", "process", "--overwrite")
    prefect_cli(env, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "segments-process"],
        env=env,
        cwd=REPO,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with (
            temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}),
            get_client(sync_client=True) as client,
        ):
            deployment = client.read_deployment_by_name("segment-customers/nightly")
            assert deployment.global_concurrency_limit is not None
            assert deployment.global_concurrency_limit.limit == 1
            assert deployment.concurrency_options is not None
            assert str(deployment.concurrency_options.collision_strategy).endswith("CANCEL_NEW")
            assert deployment.schedules[0].schedule.timezone == "UTC"
            # the run form the UI draws from the deployment's parameter schema explains itself
            assert_the_run_form_explains_every_parameter(deployment.parameter_openapi_schema)

            # The server refuses a value out of the form's bounds before any run exists.
            with pytest.raises(Exception, match=r"n_clusters|Validation"):
                client.create_flow_run_from_deployment(deployment.id, parameters={"n_clusters": 99})

            started = time.perf_counter()
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"as_of": AS_OF.isoformat(), "n_clusters": 4, "model_policy": "refit"}
            )
            assert wait_for_final_state(client, run.id) == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
            print(
                f"\n[figure] deployment run, trigger to completed: {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            assert {artifact.key for artifact in artifacts} == {
                "segment-profiles",
                "segment-run-summary",
                "segment-report",
            }
            report = (tmp_path / "report.html").read_text()
            assert 'data-chart="sizes"' in report and 'id="elbow-note"' in report  # K was fixed: no elbow
            with backend.engine().connect() as conn:
                segments = conn.execute(
                    sa.text(
                        f"select count(distinct segment_id) from {pg_schema}.customer_segments where segment_id > 0"
                    )
                ).scalar_one()
                flow_run_ids = (
                    conn.execute(sa.text(f"select flow_run_id from {pg_schema}.segment_runs")).scalars().all()
                )
            assert segments == 4
            assert str(run.id) in flow_run_ids

            # Two runs at once: the concurrency limit of one cancels the one that comes second.
            first = client.create_flow_run_from_deployment(deployment.id, parameters={"as_of": AS_OF.isoformat()})
            second = client.create_flow_run_from_deployment(deployment.id, parameters={"as_of": AS_OF.isoformat()})
            states = sorted([wait_for_final_state(client, first.id), wait_for_final_state(client, second.id)])
            assert states == ["CANCELLED", "COMPLETED"], (tmp_path / "worker.log").read_text()[-4000:]
    finally:
        stop(worker)
        worker_log.close()
        backend.dispose()


PASSWORD = "s3cret-pw"


def run_in_two_partitions(
    prefect_server: dict[str, str], postgres_url: str, pg_schema: str, tmp_path: Path, **settings: str
) -> str:
    """`segments run --partitions 2` on a small shop against the test server; checks that it succeeded
    and wrote what one query computes, and returns its console output."""
    from tasks.extract.features import extract_customer_features
    from tasks.settings import load_settings

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=300)
    # with a password (the test server trusts any): it travels to the partitions, and must show nowhere
    secret_url = sa.engine.make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    mapping = {
        "SEGMENTS_DATABASE_URL": secret_url,
        "SEGMENTS_SOURCE_TABLE": f"{pg_schema}.transactions",
        "SEGMENTS_OUTPUT_SCHEMA": pg_schema,
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
        "SEGMENTS_REPORT_PATH": "",
    } | settings
    result = subprocess.run(
        [
            str(BIN / "segments"),
            "run",
            "--verbose",
            "--as-of",
            AS_OF.isoformat(),
            "--partitions",
            "2",
            "--n-clusters",
            "4",
        ],
        env=prefect_server | mapping | {"COLUMNS": "200"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert PASSWORD not in output

    # what the two partitions wrote is what one query computes
    with backend.engine().connect() as conn:
        written = pd.read_sql(
            sa.text(
                "select customer_id, recency_days, frequency, monetary, avg_order_value, tenure_days "
                f"from {pg_schema}.customer_segments order by customer_id"
            ),
            conn,
        )
    backend.dispose()
    one_query = load_settings(
        database_url=postgres_url, source_table=f"{pg_schema}.transactions", order_id_column="order_id"
    )
    expected = extract_customer_features(one_query, AS_OF).features.reset_index(drop=True)
    assert written["customer_id"].tolist() == expected["customer_id"].tolist()
    assert written["frequency"].tolist() == expected["frequency"].tolist()
    assert written["monetary"].astype(float).round(6).tolist() == expected["monetary"].round(6).tolist()
    return output


def test_partitions_run_in_parallel_on_a_local_dask_cluster(
    prefect_server: dict[str, str], postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    output = run_in_two_partitions(prefect_server, postgres_url, pg_schema, tmp_path)
    # the local cluster starts and stops quietly: none of Dask's own INFO lines ("distributed.scheduler
    # - State start", ...) reach the console; Prefect's one line saying it creates the cluster stays
    dask_chatter = re.findall(r"\| INFO +\| distributed\.\S+ - .*", output)
    assert not dask_chatter, dask_chatter[:5]
    assert "Creating a new Dask cluster" in output
    # the partitions' time limit is the database's (statement_timeout): Prefect's own cannot stop a
    # task in a Dask worker thread, and said so in a warning for every partition of every run
    assert "Timeouts in worker threads" not in output

    # the server saw both partitions run as tasks of the extract-partitions subflow
    subflow_id = check_partition_task_runs(prefect_server["PREFECT_API_URL"], postgres_url, pg_schema)

    # The subflow runs in the process of the flow run, whose heartbeat covers it: it sends none of its
    # own (Prefect waited for its heartbeat thread, up to a second and more, at its end).
    heartbeats = flow_run_heartbeats(prefect_server["PREFECT_API_URL"], subflow_id)
    assert heartbeats["parent"] >= 1  # the flow run's own: the server records heartbeats
    assert heartbeats["subflow"] == 0


def flow_run_heartbeats(api_url: str, subflow_run_id: uuid.UUID | None) -> dict[str, int]:
    """Heartbeat events the server recorded for a subflow run and for its parent flow run, read once
    the run's last task has reported completion (the events come in order over one connection)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterName
    from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert subflow_run_id is not None

    def count(client: object, name: str, resource_id: str) -> int:
        page = client.read_events(  # type: ignore[attr-defined]
            filter=EventFilter(
                event=EventNameFilter(name=[name]), any_resource=EventAnyResourceFilter(id=[resource_id])
            ),
            limit=50,
        )
        return len(page.events)

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        subflow = client.read_flow_run(subflow_run_id)
        assert subflow.parent_task_run_id is not None
        parent_flow_run_id = client.read_task_run(subflow.parent_task_run_id).flow_run_id
        (last,) = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[parent_flow_run_id]),
                name=TaskRunFilterName(like_="publish the report and artifacts"),
            )
        )
        deadline = time.monotonic() + 60
        while count(client, "prefect.task-run.Completed", f"prefect.task-run.{last.id}") == 0:
            assert time.monotonic() < deadline, "the run's last task-run event never reached the server"
            time.sleep(0.5)
        return {
            "parent": count(client, "prefect.flow-run.heartbeat", f"prefect.flow-run.{parent_flow_run_id}"),
            "subflow": count(client, "prefect.flow-run.heartbeat", f"prefect.flow-run.{subflow_run_id}"),
        }


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Dask scheduler and one worker, each a process of its own started from another directory with
    none of the job's settings, as on other machines. Yields the scheduler's address and the worker's log."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEGMENTS_", "PREFECT_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "worker-prefect-home"), "DO_NOT_TRACK": "1"}
    workdir = tmp_path / "dask"
    workdir.mkdir()
    env["DASK_TEMPORARY_DIRECTORY"] = str(workdir)  # their scratch space, not /tmp/dask-scratch-space
    logs = {name: (tmp_path / f"dask-{name}.log").open("wb") for name in ("scheduler", "worker")}
    commands = {
        "scheduler": ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        "worker": ["worker", address, "--nthreads", "2", "--no-dashboard", "--name", "remote-worker"],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, arguments in commands.items():
            processes.append(
                subprocess.Popen(
                    [str(BIN / "dask"), *arguments],
                    env=env,
                    cwd=workdir,
                    stdout=logs[name],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        yield address, tmp_path / "dask-worker.log"
    finally:
        for process in reversed(processes):
            stop(process)
        for log in logs.values():
            log.close()


def test_partitions_run_on_the_dask_cluster_at_the_configured_address(
    prefect_server: dict[str, str], postgres_url: str, pg_schema: str, tmp_path: Path, dask_cluster: tuple[str, Path]
) -> None:

    address, worker_log = dask_cluster
    output = run_in_two_partitions(prefect_server, postgres_url, pg_schema, tmp_path, SEGMENTS_DASK_ADDRESS=address)
    assert f"Connecting to an existing Dask cluster at {address}" in output
    assert "Creating a new Dask cluster" not in output

    # the partitions ran in the worker's process, not in the job's, with no warning about their limit
    worker_output = worker_log.read_text()
    assert "Partition 0 of 2" in worker_output and "Partition 1 of 2" in worker_output, worker_output[-4000:]
    assert "Partition 0 of 2" not in output
    assert "Timeouts in worker threads" not in worker_output
    assert PASSWORD not in worker_output

    # the worker, which has none of the job's settings, reported its task runs to the job's server
    # (prefect-dask sends the flow run's settings with each task), as tasks of the run's subflow
    check_partition_task_runs(prefect_server["PREFECT_API_URL"], postgres_url, pg_schema)


def check_partition_task_runs(api_url: str, postgres_url: str, pg_schema: str) -> uuid.UUID:
    """Check that the server holds both partitions' task runs, completed, in the subflow of the flow
    run recorded in ``segment_runs``; returns the subflow's id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    backend = Backend("postgresql", postgres_url, pg_schema)
    with backend.engine().connect() as conn:
        flow_run_id = conn.execute(sa.text(f"select flow_run_id from {pg_schema}.segment_runs")).scalar_one()
    backend.dispose()
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        (subflow,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[subflow.id]))
        )
    assert sorted(run.name for run in runs) == ["extract customer partition 0", "extract customer partition 1"]
    assert all(run.state is not None and run.state.is_completed() for run in runs)
    # the subflow's parameter, the partition plan, holds the settings: the server keeps the URL masked
    shown = json.dumps(subflow.parameters, default=str)
    assert '"database_url"' in shown and PASSWORD not in shown
    return subflow.id
