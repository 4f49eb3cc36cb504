"""Every Prefect task of the flow: a thin wrapper over a plain step (name, retries, time limit, cache
policy), which logs what the step did.

Tasks that take or return DataFrames or touch the database neither cache nor persist results (hashing
a large frame costs seconds; persisted frames fill the disk). Tasks that touch the database retry
only errors that can pass (:func:`tasks.database.is_transient`), never a missing table or column.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import SecretStr

from tasks.database import is_transient
from tasks.errors import ConfigurationError
from tasks.extract.result import ExtractResult
from tasks.extract.run_input import extract_run_input
from tasks.gates import check_data_gates
from tasks.load.assignments import SegmentMoves
from tasks.load.model_store import load_latest_model
from tasks.load.runs import record_report_error, record_run_failure, start_run
from tasks.load.schema import describe_outputs
from tasks.load.write import write_run
from tasks.model.lifecycle import StoredModel
from tasks.model.step import ModelOutcome, segment_features
from tasks.report.event import run_completed_event
from tasks.report.publish import write_run_report
from tasks.report.summary import profile_rows, run_summary_markdown
from tasks.settings import SegmentSettings

P = ParamSpec("P")
R = TypeVar("R")
PROFILES_ARTIFACT_KEY = "segment-profiles"
SUMMARY_ARTIFACT_KEY = "segment-run-summary"
REPORT_ARTIFACT_KEY = "segment-report"


def retry_if_transient(_task: Task[Any, Any], _task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task only for errors that may pass (:func:`tasks.database.is_transient`)."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def database_task(name: str, task_run_name: str, timeout_seconds: int = 600) -> Callable[[Callable[P, R]], Task[P, R]]:
    """``@task`` for a step that touches the database: no caching, no persisted result, a time limit,
    and two retries (after 5 s and 30 s) when the error may pass."""
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


@database_task(name="record-run-start", task_run_name="record run {run_id} as running")
def record_run_start_task(
    settings: SegmentSettings, run_id: str, flow_run_id: str | None, as_of: date, started_at: datetime
) -> int:
    abandoned = start_run(settings, run_id=run_id, flow_run_id=flow_run_id, as_of=as_of, started_at=started_at)
    logger = get_run_logger()
    if abandoned:
        logger.warning("Marked %s run(s) left 'running' by a process that died as failed (abandoned)", abandoned)
    logger.info("Run %s for as-of %s recorded in %s", run_id, as_of, describe_outputs(settings))
    return abandoned


@database_task(name="extract-customer-features", task_run_name="extract customer features", timeout_seconds=3600)
def extract_task(settings: SegmentSettings, as_of: date) -> ExtractResult:
    result = extract_run_input(settings, as_of)
    log_extract(result)
    return result


def log_extract(result: ExtractResult) -> None:
    counts = result.counts
    get_run_logger().info(
        "Aggregated %s rows into %s customers; rejected %s: %s",
        f"{counts.rows_scanned:,}",
        f"{len(result.features):,}",
        f"{counts.rows_rejected:,}",
        counts.rejected_by_reason,
    )


@database_task(name="load-stored-model", task_run_name="load the latest stored model")
def load_stored_model_task(settings: SegmentSettings) -> StoredModel | None:
    stored = load_latest_model(settings)
    if stored is None:
        get_run_logger().info("No stored model yet")
    else:
        get_run_logger().info(
            "Stored model %s: K=%s, trained as of %s", stored.version, stored.model.n_clusters, stored.trained_as_of
        )
    return stored


@task(
    name="model-segments",
    task_run_name="fit or reuse the model",
    cache_policy=NO_CACHE,
    persist_result=False,
    timeout_seconds=3600,
)
def model_task(
    extract: ExtractResult, settings: SegmentSettings, run_id: str, scored_at: datetime, stored: StoredModel | None
) -> ModelOutcome:
    outcome = segment_features(
        extract.features, extract.as_of, settings, run_id=run_id, scored_at=scored_at, stored=stored
    )
    logger = get_run_logger()
    decision = outcome.decision
    logger.info("Model %s: %s (%s) %s", outcome.model_version, decision.action, decision.reason, decision.figures or "")
    changes = outcome.segment_changes
    silhouette = outcome.metrics["silhouette"]
    logger.info(
        "K=%s (%s); scored %s customers; silhouette %s; segments kept %s, new %s, retired %s",
        outcome.n_clusters,
        outcome.k_reason,
        f"{len(outcome.segments.assignments):,}",
        "n/a" if silhouette is None else f"{silhouette:.3f}",
        changes["kept"],
        changes["new"],
        changes["retired"],
    )
    return outcome


@database_task(name="check-data-gates", task_run_name="check the input against the data gates")
def data_gates_task(settings: SegmentSettings, extract: ExtractResult) -> list[str]:
    forced = check_data_gates(settings, extract)
    for problem in forced:
        get_run_logger().warning("Forced past a data gate: %s", problem)
    return forced


@database_task(name="write-segments", task_run_name="write segments of run {run_id}", timeout_seconds=3600)
def write_task(settings: SegmentSettings, run_id: str, extract: ExtractResult, outcome: ModelOutcome) -> SegmentMoves:
    moves = write_run(settings, run_id, extract, outcome)
    if not moves.history_updated:
        get_run_logger().warning(
            "As-of %s is older than the latest change in customer_segment_history; history left as it was",
            extract.as_of,
        )
    get_run_logger().info(
        "Wrote %s assignments and %s profiles in one transaction",
        f"{len(outcome.segments.assignments):,}",
        len(outcome.segments.profiles),
    )
    if moves.customers_moved is not None:
        refit = "" if moves.moved_by_refit is None else f", {moves.moved_by_refit:,} of them by the refit alone"
        get_run_logger().info("%s customers changed segment%s", f"{moves.customers_moved:,}", refit)
    return moves


@database_task(name="record-run-failure", task_run_name="record run {run_id} as failed")
def record_run_failure_task(settings: SegmentSettings, run_id: str, error: str) -> None:
    record_run_failure(settings, run_id=run_id, error=error)


@task(name="announce-run", task_run_name="emit segments.run.completed", cache_policy=NO_CACHE, persist_result=False)
def announce_task(
    settings: SegmentSettings, run_id: str, as_of: date, outcome: ModelOutcome, moves: SegmentMoves
) -> None:
    """Emit the run's event (:mod:`tasks.report.event`) to the Prefect server the flow reports to."""
    from prefect.events import emit_event

    event = run_completed_event(settings, run_id, as_of, outcome, moves)
    emit_event(event=event.event, resource=event.resource, payload=event.payload)
    get_run_logger().info("Emitted %s for %s", event.event, event.resource["prefect.resource.id"])


@database_task(name="record-report-error", task_run_name="record the report's error on run {run_id}")
def record_report_error_task(settings: SegmentSettings, run_id: str, error: str) -> None:
    get_run_logger().error("The outputs of run %s are written; publishing failed: %s", run_id, error)
    record_report_error(settings, run_id=run_id, error=error)


@task(
    name="publish-report", task_run_name="publish the report and artifacts", cache_policy=NO_CACHE, persist_result=False
)
def publish_task(
    settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, run_id: str, flow_run_id: str | None
) -> Path | None:
    """The profile table and the run summary as Prefect artifacts with stable keys (the UI shows each
    run's next to the previous ones), and the HTML report with its charts as a markdown artifact."""
    as_of = extract.as_of.isoformat()
    create_table_artifact(
        key=PROFILES_ARTIFACT_KEY,
        table=profile_rows(outcome.segments.profiles),
        description=f"Segment profiles as of {as_of}",
    )
    create_markdown_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        markdown=run_summary_markdown(settings, extract, outcome, run_id=run_id, flow_run_id=flow_run_id),
        description=f"Run summary as of {as_of}",
    )
    path, markdown = write_run_report(settings, extract, outcome, run_id)
    create_markdown_artifact(key=REPORT_ARTIFACT_KEY, markdown=markdown, description=f"Segment report as of {as_of}")
    if path is not None:
        get_run_logger().info("Report written to %s (%s bytes)", path, f"{path.stat().st_size:,}")
    return path
