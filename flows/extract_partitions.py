"""The ``extract-partitions`` subflow: a partitioned extract's customer-id ranges aggregated at once as
tasks on Dask (a local cluster, or the scheduler at ``SEGMENTS_DASK_ADDRESS``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pandas as pd
from prefect import flow, get_run_logger
from prefect.settings import temporary_settings

from tasks.extract.partitions import PartitionPlan
from tasks.extract.result import ExtractResult
from tasks.extract.run_input import extract_run_input
from tasks.prefect_tasks import dask_task_runner, extract_partition_task, log_extract
from tasks.settings import SegmentSettings


@flow(name="extract-partitions", flow_run_name="extract {plan.partitions} partitions", persist_result=False)
def extract_partitions(plan: PartitionPlan) -> list[pd.DataFrame]:
    """Every partition's aggregation submitted to the flow's task runner at once."""
    futures = [extract_partition_task.submit(plan, partition) for partition in range(plan.partitions)]
    return [future.result() for future in futures]


@contextmanager
def without_flow_heartbeats() -> Iterator[None]:
    """The subflow runs in the process of a flow run whose heartbeat already tells the server it is
    alive; its own would only make it wait for a heartbeat thread at its end."""
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def extract_on_dask(settings: SegmentSettings, as_of: date) -> ExtractResult:
    """The run's input with the aggregation in ``settings.partitions`` customer-id ranges on Dask, in
    one snapshot (see :mod:`tasks.extract.partitions`)."""
    runner = dask_task_runner(settings)

    def run_partitions(plan: PartitionPlan) -> list[pd.DataFrame]:
        with without_flow_heartbeats():
            return extract_partitions.with_options(task_runner=runner)(plan)

    result = extract_run_input(settings, as_of, run_partitions)
    log_extract(result)
    get_run_logger().info("The aggregation ran in %s partitions on Dask", settings.partitions)
    return result
