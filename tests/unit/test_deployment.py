"""deployments/prefect.yaml, checked offline: Prefect's schema, the entrypoint, parameters, schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.segment_customers import runner_deployment
from tasks.deployment import PREFECT_FILE, load_deployment
from tasks.errors import ConfigurationError
from tests.support.prefect_server import assert_the_run_form_explains_every_parameter


def test_the_nightly_deployment_is_declared_as_the_product_needs() -> None:
    spec = load_deployment()

    assert spec.cron == "0 2 * * *" and spec.timezone == "UTC"
    assert (spec.concurrency_limit, spec.collision_strategy) == (1, "CANCEL_NEW")
    assert spec.work_pool == "segments-process"


def test_the_entrypoint_loads_the_flow_and_the_default_parameters_validate() -> None:
    from prefect.flows import load_flow_from_entrypoint

    spec = load_deployment()
    flow = load_flow_from_entrypoint(str(PREFECT_FILE.parent.parent / spec.entrypoint))

    assert flow.name == "segment-customers"
    assert flow.validate_parameters(spec.parameters)["model_policy"] == "auto"
    with pytest.raises(Exception, match="k_max"):
        flow.validate_parameters(spec.parameters | {"k_max": 99})


def test_the_time_zone_is_changed_in_one_place_and_checked(tmp_path: Path) -> None:
    text = PREFECT_FILE.read_text()
    assert text.count("timezone:") == 1

    berlin = tmp_path / "prefect.yaml"
    berlin.write_text(text.replace("timezone: UTC", "timezone: Europe/Berlin"))
    assert load_deployment(path=berlin).timezone == "Europe/Berlin"

    nowhere = tmp_path / "bad.yaml"
    nowhere.write_text(text.replace("timezone: UTC", "timezone: Mars/Olympus"))
    with pytest.raises(ConfigurationError, match=r"timezone|time zone"):
        load_deployment(path=nowhere)

    bad_cron = tmp_path / "cron.yaml"
    bad_cron.write_text(text.replace('cron: "0 2 * * *"', 'cron: "0 25 * * *"'))
    with pytest.raises(ConfigurationError, match="schedule"):
        load_deployment(path=bad_cron)


def test_a_deployment_without_a_concurrency_strategy_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(PREFECT_FILE.read_text())
    data["deployments"][0]["concurrency_limit"] = 1
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(ConfigurationError, match="collision_strategy"):
        load_deployment(path=path)


def test_segments_serve_serves_the_same_schedule_parameters_and_limit() -> None:
    deployment = runner_deployment(load_deployment())

    schedule = deployment.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "UTC")
    assert deployment.concurrency_limit == 1
    assert str(deployment.concurrency_options.collision_strategy).endswith("CANCEL_NEW")
    assert deployment.parameters["model_policy"] == "auto"


def test_the_flow_parameters_have_a_title_and_a_one_line_description() -> None:
    from flows.segment_customers import segment_customers

    schema = segment_customers.parameters.model_dump()
    assert_the_run_form_explains_every_parameter(schema)
    # the choices of the model policy are explained where they are chosen
    policy = schema["properties"]["model_policy"]["description"]
    assert all(f"{choice}:" in policy for choice in ("auto", "reuse", "refit"))
