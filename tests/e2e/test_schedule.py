"""The nightly schedule as the server itself turns it into runs: a real `prefect server start` with its
default services, the deployment made by `prefect deploy` and by `segments serve` from
deployments/prefect.yaml, and the runs the server's scheduler created, read back from its API."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tasks.deployment import PREFECT_FILE
from tests.support.prefect_server import BIN, REPO, prefect_cli, stop

pytestmark = pytest.mark.e2e
DEPLOYMENT = "segment-customers/nightly"
# What an operator waits for after deploying: the server lists the coming nights' runs within this.
SCHEDULING_DEADLINE_SECONDS = 90


def prefect_file_in_zone(tmp_path: Path, timezone: str) -> Path:
    """deployments/prefect.yaml with its one `timezone:` line set to ``timezone``, as an operator edits it."""
    text = PREFECT_FILE.read_text()
    assert text.count("timezone: UTC") == 1
    path = tmp_path / "prefect.yaml"
    path.write_text(text.replace("timezone: UTC", f"timezone: {timezone}"))
    return path


def scheduled_runs(api_url: str) -> list[datetime]:
    """Start times of the scheduled runs of the nightly deployment, as the server's API lists them."""
    deployment = httpx.get(f"{api_url}/deployments/name/{DEPLOYMENT}", timeout=10)
    if deployment.status_code == 404:
        return []
    deployment.raise_for_status()
    response = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={
            "flow_runs": {
                "deployment_id": {"any_": [deployment.json()["id"]]},
                "state": {"type": {"any_": ["SCHEDULED"]}},
            },
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 10,
        },
        timeout=10,
    )
    response.raise_for_status()
    return [datetime.fromisoformat(run["expected_start_time"]) for run in response.json()]


def wait_for_scheduled_runs(server: dict[str, str], *logs: Path) -> list[datetime]:
    """Poll the API until the server's scheduler has created at least three runs, or fail showing the
    end of the server's log (and of ``logs``)."""
    deadline = time.monotonic() + SCHEDULING_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        runs = scheduled_runs(server["PREFECT_API_URL"])
        if len(runs) >= 3:
            return runs
        time.sleep(2)
    detail = [f"--- {log}\n{log.read_text()[-2000:]}" for log in (Path(server["PREFECT_HOME"]) / "server.log", *logs)]
    raise AssertionError(
        f"no scheduled runs of {DEPLOYMENT} within {SCHEDULING_DEADLINE_SECONDS} s\n" + "\n".join(detail)
    )


def assert_nightly_at_two_local(runs: list[datetime], timezone: str) -> None:
    """The runs are on consecutive nights at 02:00 in ``timezone``, the first within the next day."""
    zone = ZoneInfo(timezone)
    local = [run.astimezone(zone) for run in runs]
    assert [(run.hour, run.minute, run.second) for run in local] == [(2, 0, 0)] * len(local), local
    days = [run.date() for run in local]
    assert days == [days[0] + timedelta(days=offset) for offset in range(len(days))], days
    now = datetime.now(zone)
    assert now < local[0] <= now + timedelta(days=1), (now, local[0])


@pytest.fixture
def clean_server(prefect_server: dict[str, str]) -> Iterator[dict[str, str]]:
    """The module's server; the nightly deployment (and so its runs) is deleted after each test."""
    yield prefect_server
    api_url = prefect_server["PREFECT_API_URL"]
    deployment = httpx.get(f"{api_url}/deployments/name/{DEPLOYMENT}", timeout=10)
    if deployment.status_code == 200:
        httpx.delete(f"{api_url}/deployments/{deployment.json()['id']}", timeout=10).raise_for_status()


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_the_server_schedules_prefect_deploy_nightly_at_two_local(
    clean_server: dict[str, str], timezone: str, tmp_path: Path
) -> None:
    prefect_file = PREFECT_FILE if timezone == "UTC" else prefect_file_in_zone(tmp_path, timezone)
    prefect_cli(clean_server, "work-pool", "create", "segments-process", "--type", "process", "--overwrite")
    prefect_cli(clean_server, "--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all")

    runs = wait_for_scheduled_runs(clean_server)

    assert_nightly_at_two_local(runs, timezone)


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_the_server_schedules_segments_serve_nightly_at_two_local(
    clean_server: dict[str, str], timezone: str, tmp_path: Path
) -> None:
    command = [str(BIN / "segments"), "serve"]
    if timezone != "UTC":
        command += ["--prefect-file", str(prefect_file_in_zone(tmp_path, timezone))]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            command, env=clean_server, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            runs = wait_for_scheduled_runs(clean_server, log_path)
        finally:
            stop(serve)

    assert_nightly_at_two_local(runs, timezone)
