"""The nightly deployment as declared in ``deployments/prefect.yaml``: the one source of its schedule,
time zone, default parameters, work pool and concurrency limit, for ``prefect deploy`` and
``segments serve`` alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import ConfigurationError

PREFECT_FILE = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"
NIGHTLY = "nightly"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of ``prefect.yaml``, checked against Prefect's own model of the file."""

    name: str
    entrypoint: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    concurrency_limit: int
    collision_strategy: str
    work_pool: str
    tags: list[str]


def load_deployment(name: str = NIGHTLY, path: Path = PREFECT_FILE) -> DeploymentSpec:
    """Read deployment ``name`` from ``path``, validated by Prefect's ``prefect.yaml`` model; the cron
    expression and time zone are checked by Prefect's schedule model. Raises
    :class:`ConfigurationError` naming what is wrong."""
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig
    from prefect.client.schemas.schedules import CronSchedule

    try:
        document = PrefectYamlModel.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ConfigurationError(f"{path}: {error}") from None
    matches = [deployment for deployment in document.deployments if deployment.name == name]
    if not matches:
        raise ConfigurationError(f"{path} has no deployment named {name!r}")
    deployment = matches[0]
    schedules = deployment.schedules or []
    schedule = schedules[0] if len(schedules) == 1 else None
    if not isinstance(schedule, RawScheduleConfig) or not schedule.cron:
        raise ConfigurationError(f"{path}: deployment {name!r} needs exactly one cron schedule")
    try:
        CronSchedule(cron=schedule.cron, timezone=schedule.timezone or "UTC")
    except ValueError as error:
        raise ConfigurationError(f"{path}: schedule of {name!r}: {error}") from None
    limit = deployment.concurrency_limit
    if limit is None or isinstance(limit, int) or limit.limit is None:
        raise ConfigurationError(f"{path}: deployment {name!r} needs a concurrency_limit with a collision_strategy")
    if not deployment.entrypoint or deployment.work_pool is None or not deployment.work_pool.name:
        raise ConfigurationError(f"{path}: deployment {name!r} needs an entrypoint and a work pool")
    tags = deployment.tags if isinstance(deployment.tags, list) else [deployment.tags] if deployment.tags else []
    return DeploymentSpec(
        name=name,
        entrypoint=deployment.entrypoint,
        cron=schedule.cron,
        timezone=schedule.timezone or "UTC",
        parameters=dict(deployment.parameters),
        concurrency_limit=limit.limit,
        collision_strategy=str(limit.collision_strategy),
        work_pool=deployment.work_pool.name,
        tags=[str(tag) for tag in tags],
    )
