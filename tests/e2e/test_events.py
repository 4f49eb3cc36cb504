"""The event a run announces, read back from a real Prefect server, and the example deployment
trigger that starts a follow-up from it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.test_cli import segments
from tests.support.backend import Backend
from tests.support.prefect_server import REPO, prefect_cli, wait_for
from tests.support.shop import AS_OF, load_synthetic

pytestmark = pytest.mark.e2e
TRIGGER = REPO / "deployments" / "examples" / "win-back.yaml"


def test_each_run_emits_one_event_a_trigger_starts_a_follow_up_from(
    prefect_server: dict[str, str], postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=600, seed=4)
    # the example trigger, following this test's output schema
    trigger = tmp_path / "win-back.yaml"
    trigger.write_text(TRIGGER.read_text().replace("segments.output.public", f"segments.output.{pg_schema}"))
    prefect_cli(prefect_server, "work-pool", "create", "segments-process", "--type", "process", "--overwrite")
    prefect_cli(prefect_server, "--no-prompt", "deploy", "--prefect-file", str(trigger), "--all")
    env = prefect_server | {
        "SEGMENTS_DATABASE_URL": postgres_url,
        "SEGMENTS_SOURCE_TABLE": f"{pg_schema}.transactions",
        "SEGMENTS_OUTPUT_SCHEMA": pg_schema,
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
        "SEGMENTS_REPORT_PATH": "",
    }
    for as_of, policy in ((AS_OF - timedelta(days=28), "auto"), (AS_OF, "refit")):
        result = segments("run", "--as-of", as_of.isoformat(), "--model-policy", policy, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-3000:]

    with backend.engine().connect() as conn:
        runs = conn.execute(sa.text(f"select * from {pg_schema}.segment_runs order by started_at")).mappings().all()
        ids = conn.execute(sa.text(f"select customer_id from {pg_schema}.customer_segments")).scalars().all()
    backend.dispose()
    with (
        temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        events = wait_for(
            lambda: (
                client.read_events(
                    filter=EventFilter(event=EventNameFilter(name=["segments.run.completed"])), limit=50
                ).events
            ),
            lambda events: len(events) >= 2,
            90,
            "two segments.run.completed events",
        )
        follow_ups = wait_for(
            lambda: client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["win-back"])),
                flow_run_filter=FlowRunFilter(),
            ),
            lambda runs: len(runs) >= 2,
            90,
            "two win-back flow runs",
        )

    assert len(events) == 2  # one per run
    by_run = {event.payload["run_id"]: event for event in events}
    first, refit = by_run[runs[0]["run_id"]], by_run[runs[1]["run_id"]]
    assert refit.resource.id == f"segments.output.{pg_schema}"
    payload = refit.payload
    assert payload["as_of"] == AS_OF.isoformat() and payload["model_action"] == "refit"
    assert payload["n_clusters"] == runs[1]["n_clusters"] and payload["customers"] == runs[1]["customers"]
    assert sum(segment["customers"] for segment in payload["segments"]) == runs[1]["customers"]
    assert payload["customers_moved"] == runs[1]["customers_moved"] > 0
    assert sum(move["customers"] for move in payload["moves"]) == runs[1]["customers_moved"]
    assert payload["moved_by_refit"] == runs[1]["moved_by_refit"]
    for segment_name, customers in payload["left"].items():
        assert customers == sum(m["customers"] for m in payload["moves"] if m["from_segment_name"] == segment_name)
    assert first.payload["moves"] == [] and first.payload["model_action"] == "fit"
    text = json.dumps([event.model_dump(mode="json") for event in events])
    assert not any(customer_id in text for customer_id in ids)  # counts only, no customer id

    # the trigger started the follow-up once per event, with that night's count of those who left Champions
    parameters = sorted((run.parameters["as_of"], run.parameters["left"]) for run in follow_ups)
    assert parameters == sorted((event.payload["as_of"], event.payload["left"].get("Champions", 0)) for event in events)
