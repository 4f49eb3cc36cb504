"""The Dask task runner the flow runs partitions on: a local cluster by default, or a given scheduler."""

from __future__ import annotations

import distributed

from tasks.prefect_tasks import dask_task_runner
from tasks.settings import load_settings

POSTGRES = {"database_url": "postgresql+psycopg://segments@db.example/shop", "source_table": "sales.transactions"}


def test_the_local_cluster_serves_its_pages_on_the_loopback_only() -> None:
    runner = dask_task_runner(load_settings(partitions=2, **POSTGRES))
    assert runner.address is None

    with distributed.LocalCluster(**runner.cluster_kwargs) as cluster:
        listening = [sock.getsockname() for sock in cluster.scheduler.http_server._sockets.values()]
        link = cluster.dashboard_link
        threads = sum(worker.nthreads for worker in cluster.scheduler.workers.values())

    # not every interface at 8787 ('0.0.0.0' and '::'), as distributed's default did for each run
    assert listening and all(address[0] == "127.0.0.1" for address in listening), listening
    port = listening[0][1]
    assert port != 8787
    assert link == f"http://127.0.0.1:{port}/status"  # the link printed in the run's log leads there
    assert threads == 2  # one thread per partition


def test_a_scheduler_address_is_used_as_given() -> None:
    runner = dask_task_runner(load_settings(partitions=2, dask_address="tcp://10.0.0.5:8786", **POSTGRES))
    assert runner.address == "tcp://10.0.0.5:8786"
