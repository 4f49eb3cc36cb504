"""The run's steps as Prefect tasks: one-line wrappers over the plain functions, plus the glue that
turns an extract and a fit into output rows.

Tasks that take or return DataFrames or touch the database neither cache nor persist results (hashing
a large frame costs seconds; persisted frames fill the disk). Tasks that touch the database retry only
errors that can pass (the database unreachable), never a missing table or column.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import SecretStr

from tasks import load
from tasks.errors import ConfigurationError, DatabaseUnavailableError
from tasks.extract import ExtractResult, extract_customer_features
from tasks.model import FitResult, fit_segment_model
from tasks.segments import SegmentTable, build_segments
from tasks.settings import SegmentSettings

P = ParamSpec("P")
R = TypeVar("R")


def retry_if_transient(_task: Task[Any, Any], _task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task only when the database was unreachable, which may pass."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, DatabaseUnavailableError)


def database_task(name: str, task_run_name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for a step that touches the database: no caching, no persisted result, and two
    retries (after 5 s and 30 s) when the database was unreachable."""
    return task(
        name=name,
        task_run_name=task_run_name,
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=2,
        retry_delay_seconds=[5, 30],
        retry_condition_fn=retry_if_transient,
    )


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
    """A fit and the output rows built from it."""

    fit: FitResult
    segments: SegmentTable
    model_version: str


def segment_features(
    extract: ExtractResult, settings: SegmentSettings, *, run_id: str, scored_at: datetime
) -> ModelOutcome:
    """Fit the model on customers with net purchases and build the assignment and profile rows."""
    features = extract.features
    purchasers = features.loc[features["frequency"] > 0]
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
    model_version = run_id
    segments = build_segments(
        features,
        fit.labels,
        fit.model,
        as_of=extract.as_of,
        run_id=run_id,
        model_version=model_version,
        scored_at=scored_at,
    )
    return ModelOutcome(fit=fit, segments=segments, model_version=model_version)


def run_record_fields(extract: ExtractResult, outcome: ModelOutcome) -> dict[str, Any]:
    """What ``segment_runs`` keeps about a successful run: counts, K and how it was chosen, quality."""
    counts = extract.counts
    assignments = outcome.segments.assignments
    clustered = int((assignments["frequency"] > 0).sum())
    return {
        "as_of": extract.as_of,
        "model_action": "fit",
        "model_reason": "this release fits a new model on every run",
        "model_version": outcome.model_version,
        "n_clusters": outcome.fit.n_clusters,
        "k_reason": outcome.fit.k_reason,
        "rows_scanned": counts.rows_scanned,
        "rows_in_window": counts.rows_in_window,
        "rows_before_window": counts.rows_before_window,
        "rows_rejected": counts.rows_rejected,
        "rejected_by_reason": counts.rejected_by_reason,
        "customers": len(assignments),
        "customers_clustered": clustered,
        "customers_no_net_purchases": len(assignments) - clustered,
        "elbow": outcome.fit.elbow.as_dict() if outcome.fit.elbow else None,
        "model": outcome.fit.model.to_dict(),
        **outcome.fit.metrics,
    }


@database_task(name="record-run-start", task_run_name="record run {run_id} as running")
def record_run_start(
    settings: SegmentSettings, run_id: str, flow_run_id: str | None, as_of: date, started_at: datetime
) -> None:
    load.start_run(settings, run_id=run_id, flow_run_id=flow_run_id, as_of=as_of, started_at=started_at)
    get_run_logger().info("Run %s for as-of %s recorded in %s", run_id, as_of, load.describe_outputs(settings))


@database_task(name="extract-customer-features", task_run_name="extract features from {settings.source_table}")
def extract_features(settings: SegmentSettings, as_of: date) -> ExtractResult:
    logger = get_run_logger()
    started = time.perf_counter()
    result = extract_customer_features(settings, as_of)
    seconds = time.perf_counter() - started
    counts = result.counts
    logger.info(
        "Aggregated %s rows into %s customers in %.2f s (%.0f rows/s); rejected %s: %s",
        f"{counts.rows_scanned:,}",
        f"{len(result.features):,}",
        seconds,
        counts.rows_scanned / seconds if seconds else float("nan"),
        f"{counts.rows_rejected:,}",
        counts.rejected_by_reason,
    )
    return result


@task(name="fit-segments", task_run_name="fit segments", cache_policy=NO_CACHE, persist_result=False)
def fit_segments(extract: ExtractResult, settings: SegmentSettings, run_id: str, scored_at: datetime) -> ModelOutcome:
    logger = get_run_logger()
    started = time.perf_counter()
    outcome = segment_features(extract, settings, run_id=run_id, scored_at=scored_at)
    fit = outcome.fit
    logger.info(
        "K=%s (%s); fitted and assigned %s customers in %.2f s; silhouette %s",
        fit.n_clusters,
        fit.k_reason,
        f"{len(fit.labels):,}",
        time.perf_counter() - started,
        "n/a" if fit.metrics["silhouette"] is None else f"{fit.metrics['silhouette']:.3f}",
    )
    return outcome


@database_task(name="write-segments", task_run_name="write segments of run {run_id}")
def write_segments(settings: SegmentSettings, run_id: str, extract: ExtractResult, outcome: ModelOutcome) -> None:
    started = time.perf_counter()
    load.write_run_outputs(
        settings,
        run_id=run_id,
        segments=outcome.segments,
        customer_id_is_integer=extract.customer_id_is_integer,
        run_fields=run_record_fields(extract, outcome),
    )
    get_run_logger().info(
        "Wrote %s assignments and %s profiles in one transaction in %.2f s",
        f"{len(outcome.segments.assignments):,}",
        len(outcome.segments.profiles),
        time.perf_counter() - started,
    )


@database_task(name="record-run-failure", task_run_name="record run {run_id} as failed")
def record_run_failure(settings: SegmentSettings, run_id: str, error: str) -> None:
    load.record_run_failure(settings, run_id=run_id, error=error)
