"""The nightly deployment on a real Prefect server: deploy, run from the API as the UI does, with a
worker of the process pool, and the concurrency limit cancelling a second run."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.backend import Backend
from tests.support.prefect_server import (
    BIN,
    REPO,
    assert_the_run_form_explains_every_parameter,
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
