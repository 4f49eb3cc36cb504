"""The run's steps as Prefect tasks: one-line wrappers over the plain functions, plus the glue that
turns an extract and a fit into output rows.

Tasks that take or return DataFrames or touch the database neither cache nor persist results (hashing
a large frame costs seconds; persisted frames fill the disk). Tasks that touch the database retry only
errors that can pass (the database unreachable), never a missing table or column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar, cast

import numpy as np
import pandas as pd
from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.settings import temporary_settings
from prefect.states import State
from pydantic import SecretStr
from threadpoolctl import threadpool_limits

from tasks import gates, load, progress
from tasks.attributes import extract_run_input
from tasks.compare import compare_algorithms
from tasks.database import is_transient
from tasks.errors import ConfigurationError
from tasks.extract import ExtractResult
from tasks.lifecycle import ModelDecision, StoredModel, decide_model_action, match_segments, psi_reference
from tasks.memory import freed_memory_reused
from tasks.model import ElbowCurve, SegmentModel, clustering_metrics, fit_segment_model, nearest_centroid
from tasks.partitions import PartitionPlan, extract_partition
from tasks.segments import (
    NO_NET_PURCHASES_NAME,
    SegmentTable,
    attribute_segment_labels,
    build_segments,
    cluster_means,
    clusterable,
    fresh_segment_labels,
    grid_names,
    with_scores,
)
from tasks.settings import SegmentSettings

P = ParamSpec("P")
R = TypeVar("R")


def retry_if_transient(_task: Task[Any, Any], _task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task only for errors that may pass (:func:`tasks.database.is_transient`)."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def database_task(name: str, task_run_name: str, timeout_seconds: int = 600) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for a step that touches the database: no caching, no persisted result, a time limit,
    and two retries (after 5 s and 30 s) when the database was unreachable."""
    return task(
        name=name,
        task_run_name=task_run_name,
        timeout_seconds=timeout_seconds,
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=2,
        retry_delay_seconds=[5, 30],
        retry_condition_fn=retry_if_transient,
    )


def one_native_thread(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with the native thread pools (OpenMP, BLAS) held to one thread."""
    return cast(Callable[P, R], threadpool_limits.wrap(limits=1)(function))


def read_secret(block_name: str) -> SecretStr:
    """The value of the Prefect Secret block ``block_name`` (e.g. a database URL with its password)."""
    from prefect.blocks.system import Secret

    try:
        # called from sync code, load() returns the block (its type also admits a coroutine)
        block = cast(Secret[Any], Secret.load(block_name))
        value = block.get()
    except ValueError as error:
        raise ConfigurationError(
            f"no Prefect Secret block named {block_name!r} (database_url_secret): {error}"
        ) from None
    return SecretStr(str(value))


@dataclass(frozen=True)
class ModelOutcome:
    """The model decision, the model that scored the run, and the output rows built from it."""

    decision: ModelDecision
    model: SegmentModel
    model_version: int
    labels: np.ndarray
    k_reason: str
    elbow: ElbowCurve | None
    metrics: dict[str, float | None]
    segments: SegmentTable
    new_model: StoredModel | None
    segment_changes: dict[str, Any]
    segment_names: tuple[str, ...]
    comparison: list[dict[str, Any]] | None = None

    @property
    def allowed_names(self) -> set[str]:
        """Names a customer of this run may have: the model's and the reserved one."""
        return set(self.segment_names) | {NO_NET_PURCHASES_NAME}

    @property
    def n_clusters(self) -> int:
        return self.model.n_clusters


@one_native_thread
@freed_memory_reused()  # its arrays of the population's size, freed and made again, reuse the heap
def segment_features(
    extract: ExtractResult,
    settings: SegmentSettings,
    *,
    run_id: str,
    scored_at: datetime,
    stored: StoredModel | None,
) -> ModelOutcome:
    """Decide to fit, reuse or refit (the model policy), score every customer with net purchases, give
    each cluster its stable segment id and name, and build the assignment and profile rows.

    Native thread pools (KMeans' OpenMP, OpenBLAS) are held to one thread: the model works on a
    sample of at most ~1M customers and 3-5 features, where threads only wait on each other. At 877k
    customers on 2 cores this step took 1.9-2.1 s with two threads and 1.5-1.65 s with one, and
    2.0-2.6 s against 1.5 s while the database used the other core (a partitioned extract's row
    count runs then); at 877k sampled customers KMeans took as long either way."""
    features = extract.features
    clustered = clusterable(features)
    if clustered.all():
        purchasers = features
    else:  # a copy of the columns a model reads (this run's, the stored one's), not of the whole frame:
        # at 877k customers ~30 MB instead of ~62 MB, held through the step to its peak of memory
        model_columns = {*settings.features, *(stored.model.input_columns if stored else ())}
        purchasers = features.loc[clustered, [column for column in features if column in model_columns]]
    decision = decide_model_action(
        settings.model_policy,
        stored,
        purchasers,
        features=settings.features,
        winsorize_quantile=settings.winsorize_quantile,
        as_of=extract.as_of,
        max_model_age_days=settings.max_model_age_days,
        psi_threshold=settings.drift_psi_threshold,
        inertia_ratio_threshold=settings.drift_inertia_ratio,
        random_state=settings.random_state,
    )
    scored = with_scores(features)
    new_model: StoredModel | None = None
    if decision.action == "reuse":
        assert stored is not None
        model, version = stored.model, stored.version
        values = model.transform(purchasers)
        labels = nearest_centroid(values, model.centroids)
        metrics = clustering_metrics(values, labels, model.centroids, np.random.default_rng(settings.random_state))
        del values
        ids, names = stored.segment_ids, stored.segment_names
        k_reason, elbow = f"K={model.n_clusters} of stored model {version}", None
        changes: dict[str, Any] = {"kept": list(ids), "new": [], "retired": []}
    else:
        fit = fit_segment_model(
            purchasers,
            settings.features,
            n_clusters=settings.n_clusters,
            k_min=settings.k_min,
            k_max=settings.k_max,
            sample_size=settings.sample_size,
            winsorize_quantile=settings.winsorize_quantile,
            random_state=settings.random_state,
        )
        model, labels, metrics, k_reason, elbow = fit.model, fit.labels, fit.metrics, fit.k_reason, fit.elbow
        version = stored.version + 1 if stored else 1
        if settings.attributes_only:
            sizes = np.bincount(labels, minlength=model.n_clusters).tolist()
            fresh_ids, fresh_names = attribute_segment_labels(model, sizes)
            base_names = list(fresh_names)
        else:
            means = cluster_means(scored, labels, model.n_clusters)
            fresh_ids, fresh_names = fresh_segment_labels(means)
            base_names = grid_names(means)
        if stored is not None and stored.model.features == model.features:
            match = match_segments(model, stored, base_names)
            ids, names, next_id = match.segment_ids, match.segment_names, match.next_segment_id
            kept = sorted(match.matched.values())
            changes = {"kept": kept, "new": sorted(set(ids) - set(kept)), "retired": list(match.retired)}
        else:
            names = fresh_names
            offset = stored.next_segment_id - 1 if stored else 0  # never reuse an id a past model had
            ids = tuple(segment + offset for segment in fresh_ids)
            next_id = max(ids) + 1
            changes = {"kept": [], "new": sorted(ids), "retired": list(stored.segment_ids) if stored else []}
        new_model = StoredModel(
            version=version,
            model=model,
            winsorize_quantile=settings.winsorize_quantile,
            segment_ids=ids,
            segment_names=names,
            next_segment_id=next_id,
            psi_reference=psi_reference(fit.values, model.features),
            trained_as_of=extract.as_of,
            training_run_id=run_id,
            metrics=metrics,
        )
        del fit  # its standardized features: ~21 MB at 877k customers, not needed past here
    comparison = None
    if settings.compare_algorithms:
        comparison = compare_algorithms(model.transform(purchasers), model.n_clusters, settings.random_state)
    del purchasers  # before the assignments are built, the step's peak of memory
    segments = build_segments(
        scored,
        labels,
        model,
        clustered=clustered,
        segment_ids=ids,
        segment_names=names,
        as_of=extract.as_of,
        run_id=run_id,
        model_version=str(version),
        scored_at=scored_at,
    )
    return ModelOutcome(
        comparison=comparison,
        decision=decision,
        model=model,
        model_version=version,
        labels=labels,
        k_reason=k_reason,
        elbow=elbow,
        metrics=metrics,
        segments=segments,
        new_model=new_model,
        segment_changes=changes,
        segment_names=tuple(names),
    )


def run_record_fields(extract: ExtractResult, outcome: ModelOutcome) -> dict[str, Any]:
    """What ``segment_runs`` keeps about a successful run: counts, the model decision and its figures,
    K and how it was chosen, quality."""
    counts = extract.counts
    assignments = outcome.segments.assignments
    clustered = int((assignments["segment_id"] != 0).sum())
    return {
        "as_of": extract.as_of,
        "model_action": outcome.decision.action,
        "model_reason": outcome.decision.reason,
        "drift": outcome.decision.figures or None,
        "segment_changes": outcome.segment_changes,
        "model_version": str(outcome.model_version),
        "n_clusters": outcome.n_clusters,
        "k_reason": outcome.k_reason,
        "rows_scanned": counts.rows_scanned,
        "rows_in_window": counts.rows_in_window,
        "rows_before_window": counts.rows_before_window,
        "rows_rejected": counts.rows_rejected,
        "rejected_by_reason": counts.rejected_by_reason,
        "customers": len(assignments),
        "customers_clustered": clustered,
        "customers_no_net_purchases": len(assignments) - clustered,
        "elbow": outcome.elbow.as_dict() if outcome.elbow else None,
        "algorithm_comparison": outcome.comparison,
        **outcome.metrics,
    }


def check_data_gates(settings: SegmentSettings, extract: ExtractResult) -> list[str]:
    """The input gates of :mod:`tasks.gates` against the last successful run; returns what ``force``
    let pass."""
    return gates.check_input(
        extract.counts,
        len(extract.features),
        load.last_successful_customers(settings),
        max_rejected_share=settings.max_rejected_share,
        max_customer_drop=settings.max_customer_drop,
        force=settings.force,
    )


@database_task(name="check-data-gates", task_run_name="check the input against the data gates")
def data_gates(settings: SegmentSettings, extract: ExtractResult) -> None:
    counts = extract.counts
    get_run_logger().info(
        "Source rows: %s scanned, %s in the window, %s rejected (%s)",
        f"{counts.rows_scanned:,}",
        f"{counts.rows_in_window:,}",
        f"{counts.rows_rejected:,}",
        counts.rejected_by_reason,
    )
    for problem in check_data_gates(settings, extract):
        get_run_logger().warning("Forced past a data gate: %s", problem)


@database_task(name="load-stored-model", task_run_name="load the latest stored model")
def load_stored_model(settings: SegmentSettings) -> StoredModel | None:
    stored = load.load_latest_model(settings)
    if stored is None:
        get_run_logger().info("No stored model yet")
    else:
        get_run_logger().info(
            "Stored model %s: K=%s, trained as of %s", stored.version, stored.model.n_clusters, stored.trained_as_of
        )
    return stored


@database_task(name="record-run-start", task_run_name="record run {run_id} as running")
def record_run_start(
    settings: SegmentSettings, run_id: str, flow_run_id: str | None, as_of: date, started_at: datetime
) -> None:
    abandoned = load.start_run(settings, run_id=run_id, flow_run_id=flow_run_id, as_of=as_of, started_at=started_at)
    logger = get_run_logger()
    if abandoned:
        logger.warning("Marked %s run(s) left 'running' by a process that died as failed (abandoned)", abandoned)
    logger.info("Run %s for as-of %s recorded in %s", run_id, as_of, load.describe_outputs(settings))


@database_task(
    name="extract-customer-features",
    task_run_name="extract customer features",
    timeout_seconds=3600,
)
def extract_features(settings: SegmentSettings, as_of: date) -> ExtractResult:
    with progress.step("extract") as current:
        result = extract_run_input(settings, as_of)
        counts = result.counts
        current.finish(counts.rows_scanned, "rows")
    get_run_logger().info(
        "Aggregated %s into %s customers; rejected %s: %s",
        current.detail,
        f"{len(result.features):,}",
        f"{counts.rows_rejected:,}",
        counts.rejected_by_reason,
    )
    return result


@task(
    name="extract-partition",
    task_run_name="extract customer partition {partition}",
    cache_policy=NO_CACHE,
    persist_result=False,
    # no timeout_seconds: in a Dask worker's thread Prefect cannot enforce it (and warns); the
    # partition's statement_timeout is the limit (PartitionPlan.time_limit_seconds)
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_if_transient,
)
def extract_partition_task(plan: PartitionPlan, partition: int) -> pd.DataFrame:
    frame = extract_partition(plan, partition)
    get_run_logger().info("Partition %s of %s: %s customers", partition, plan.partitions, f"{len(frame):,}")
    return frame


@flow(name="extract-partitions", flow_run_name="extract {plan.partitions} partitions", persist_result=False)
def extract_partitions_flow(plan: PartitionPlan) -> list[pd.DataFrame]:
    """Every partition's aggregation submitted to the flow's task runner (Dask) at once."""
    futures = [extract_partition_task.submit(plan, partition) for partition in range(plan.partitions)]
    return [future.result() for future in futures]


@contextmanager
def without_flow_heartbeats() -> Iterator[None]:
    """Flow runs started inside start no heartbeat of their own: for a subflow, which runs in the
    process of a flow run whose heartbeat already tells the server it is alive.

    Prefect 3.9 starts a heartbeat thread for every flow run, and at the run's end waits for it: the
    thread sleeps in whole seconds, and its first heartbeat goes out through the events client. At 10M
    transactions the extract in 2 partitions took 1.0-1.3 s longer as a subflow on Dask than on plain
    threads; an empty subflow of two tasks took 1.1-3.3 s with its heartbeat, 0.18-0.21 s without."""
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def dask_task_runner(settings: SegmentSettings) -> Any:
    """prefect-dask's runner: the cluster at ``SEGMENTS_DASK_ADDRESS``, or a local one whose threads
    (one per partition) wait on the database in parallel; the work itself runs in PostgreSQL.

    Dask logs its cluster's start and stop at INFO (about forty lines a run, "Scheduler at ...",
    "Retire worker ..."): those are held back from the run's console and Prefect logs, its warnings
    and errors still show."""
    import dask

    dask.config.set({"logging.distributed": "warning"})  # read when distributed is first imported
    from prefect_dask import DaskTaskRunner

    logging.getLogger("distributed").setLevel(logging.WARNING)  # in case it was imported before

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # The local cluster's HTTP server (dashboard, metrics, cluster and task pages) listens on the
    # loopback, on a free port, and its link says so: with dashboard_address None it still listened
    # on every interface at 8787 for the length of each run (and moved, with a warning, when 8787
    # was taken).
    dask.config.set({"distributed.dashboard.link": "{scheme}://127.0.0.1:{port}/status"})
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 1,
            "threads_per_worker": settings.partitions,
            "processes": False,
            "dashboard_address": "127.0.0.1:0",
        }
    )


def extract_on_dask(settings: SegmentSettings, as_of: date) -> ExtractResult:
    """The extract with its aggregation split into ``settings.partitions`` customer partitions run on
    Dask, in one snapshot (see :mod:`tasks.partitions`)."""
    runner = dask_task_runner(settings)

    def run_partitions(plan: PartitionPlan) -> list[pd.DataFrame]:
        with without_flow_heartbeats():
            return extract_partitions_flow.with_options(task_runner=runner)(plan)

    with progress.step("extract") as current:
        result = extract_run_input(settings, as_of, run_partitions)
        # the rows are still being counted (while the model is fitted): customers per second here
        current.finish(len(result.features), "customers")
    get_run_logger().info("Aggregated %s in %s partitions on Dask", current.detail, settings.partitions)
    return result


@task(
    name="model-segments",
    task_run_name="fit or reuse the model",
    cache_policy=NO_CACHE,
    persist_result=False,
    timeout_seconds=3600,
)
def model_segments(
    extract: ExtractResult, settings: SegmentSettings, run_id: str, scored_at: datetime, stored: StoredModel | None
) -> ModelOutcome:
    logger = get_run_logger()
    with progress.step("model") as current:
        outcome = segment_features(extract, settings, run_id=run_id, scored_at=scored_at, stored=stored)
        current.finish(len(outcome.segments.assignments), "customers")
    logger.info(
        "Model %s: %s (%s) %s",
        outcome.model_version,
        outcome.decision.action,
        outcome.decision.reason,
        outcome.decision.figures or "",
    )
    logger.info(
        "K=%s (%s); scored %s; silhouette %s; segments kept %s, new %s, retired %s",
        outcome.n_clusters,
        outcome.k_reason,
        current.detail,
        "n/a" if outcome.metrics["silhouette"] is None else f"{outcome.metrics['silhouette']:.3f}",
        outcome.segment_changes["kept"],
        outcome.segment_changes["new"],
        outcome.segment_changes["retired"],
    )
    return outcome


@database_task(name="write-segments", task_run_name="write segments of run {run_id}", timeout_seconds=3600)
def write_segments(settings: SegmentSettings, run_id: str, extract: ExtractResult, outcome: ModelOutcome) -> None:
    with progress.step("write") as current:
        history_updated = load.write_run_outputs(
            settings,
            run_id=run_id,
            segments=outcome.segments,
            customer_id_is_integer=extract.customer_id_is_integer,
            run_fields=run_record_fields(extract, outcome),
            new_model=outcome.new_model,
            allowed_names=outcome.allowed_names,
        )
        current.finish(len(outcome.segments.assignments), "rows")
    if not history_updated:
        get_run_logger().warning(
            "As-of %s is older than the latest change in customer_segment_history; history left as it was",
            extract.as_of,
        )
    get_run_logger().info(
        "Wrote %s of assignments and %s profiles in one transaction", current.detail, len(outcome.segments.profiles)
    )


@database_task(name="record-run-failure", task_run_name="record run {run_id} as failed")
def record_run_failure(settings: SegmentSettings, run_id: str, error: str) -> None:
    load.record_run_failure(settings, run_id=run_id, error=error)
