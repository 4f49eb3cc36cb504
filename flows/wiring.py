"""The run's wiring: extract -> gates -> model -> write -> report, in :func:`run_segmentation`.

The one place the steps are wired, with no Prefect import: the ``segment-customers`` flow
(:mod:`flows.segment_customers`) runs it with the steps as Prefect tasks; the CLI without a Prefect
server, the tests and the bench run it with the plain functions (:data:`PLAIN_STEPS`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tasks import progress
from tasks.extract.result import ExtractResult, default_as_of
from tasks.extract.run_input import extract_run_input
from tasks.gates import check_data_gates
from tasks.load.assignments import SegmentMoves
from tasks.load.model_store import load_latest_model
from tasks.load.runs import record_report_error, record_run_failure, start_run
from tasks.load.write import write_run
from tasks.locking import run_lock
from tasks.model.lifecycle import StoredModel
from tasks.model.step import ModelOutcome, segment_features
from tasks.report.publish import write_run_report
from tasks.settings import SegmentSettings


@dataclass(frozen=True)
class Steps:
    """The run's steps, called by :func:`run_segmentation` with these arguments."""

    start: Callable[..., int]  # (settings, run_id, flow_run_id, as_of, started_at) -> abandoned runs
    extract: Callable[[SegmentSettings, date], ExtractResult]
    stored_model: Callable[[SegmentSettings], StoredModel | None]
    model: Callable[..., ModelOutcome]  # (extract, settings, run_id, scored_at, stored)
    gates: Callable[[SegmentSettings, ExtractResult], list[str]]
    write: Callable[[SegmentSettings, str, ExtractResult, ModelOutcome], SegmentMoves]
    fail: Callable[..., None]  # (settings, run_id, error): before the write committed
    announce: Callable[..., None]  # (settings, run_id, as_of, outcome, moves): the run's event
    publish: Callable[..., Path | None]  # (settings, extract, outcome, run_id, flow_run_id) -> report
    publish_failed: Callable[..., None]  # (settings, run_id, error): after the write committed


def _model(
    extract: ExtractResult, settings: SegmentSettings, run_id: str, scored_at: datetime, stored: StoredModel | None
) -> ModelOutcome:
    return segment_features(
        extract.features, extract.as_of, settings, run_id=run_id, scored_at=scored_at, stored=stored
    )


def _publish(
    settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, run_id: str, flow_run_id: str | None
) -> Path | None:
    return write_run_report(settings, extract, outcome, run_id)[0] if settings.report_path else None


PLAIN_STEPS = Steps(
    start=lambda settings, run_id, flow_run_id, as_of, started_at: start_run(
        settings, run_id=run_id, flow_run_id=flow_run_id, as_of=as_of, started_at=started_at
    ),
    extract=extract_run_input,
    stored_model=load_latest_model,
    model=_model,
    gates=check_data_gates,
    write=write_run,
    fail=lambda settings, run_id, error: record_run_failure(settings, run_id=run_id, error=error),
    # events go to a Prefect server; without one (the CLI's plain run) there is none to tell
    announce=lambda settings, run_id, as_of, outcome, moves: None,
    publish=_publish,
    publish_failed=lambda settings, run_id, error: record_report_error(settings, run_id=run_id, error=error),
)


@dataclass(frozen=True)
class RunResult:
    """What a run did: its id and date, its input and model outcome, who moved (``None`` for a dry
    run), the report it wrote (if any) or why it failed after the outputs committed, what a person
    should know (a gate ``force`` let pass, history left as it was), and each step's wall time in
    seconds."""

    run_id: str
    as_of: date
    extract: ExtractResult
    outcome: ModelOutcome
    moves: SegmentMoves | None
    report_path: Path | None
    report_error: str | None
    notes: list[str]
    seconds: dict[str, float]


def run_segmentation(
    settings: SegmentSettings, steps: Steps = PLAIN_STEPS, *, flow_run_id: str | None = None
) -> RunResult:
    """One run: take the output's lock, record the run, extract, check the data gates, fit or reuse
    the model, write everything in one transaction, announce it, publish the report. A failure before
    the write committed is recorded on the run (``failed``) and re-raised; one of the event or the
    report after it is recorded beside the ``succeeded`` run and returned in ``report_error``, since
    the run's rows are live. A dry run writes nothing and takes no lock."""
    as_of = settings.as_of or default_as_of()
    run_id = str(uuid.uuid4())
    started_at = datetime.now(UTC)
    seconds: dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any], unit: Callable[[Any], tuple[int, str]] | None = None) -> Any:
        clock = time.perf_counter()
        with progress.step(name) as current:
            result = call()
            if unit is not None:
                current.finish(*unit(result))
        seconds[name] = time.perf_counter() - clock
        return result

    with contextlib.nullcontext() if settings.dry_run else run_lock(settings):
        if not settings.dry_run:
            steps.start(settings, run_id, flow_run_id, as_of, started_at)
        try:
            extract = timed(
                "extract", lambda: steps.extract(settings, as_of), lambda e: (e.counts.rows_scanned, "rows")
            )
            notes = [f"forced past a data gate: {problem}" for problem in steps.gates(settings, extract)]
            stored = steps.stored_model(settings)
            outcome = timed(
                "model",
                lambda: steps.model(extract, settings, run_id, started_at, stored),
                lambda o: (len(o.segments.assignments), "customers"),
            )
            moves = None
            if not settings.dry_run:
                moves = timed(
                    "write",
                    lambda: steps.write(settings, run_id, extract, outcome),
                    lambda _: (len(outcome.segments.assignments), "rows"),
                )
                if not moves.history_updated:
                    notes.append(
                        f"as-of {as_of} is older than the latest change in customer_segment_history: "
                        "the history was left as it was"
                    )
        except Exception as error:
            if not settings.dry_run:
                steps.fail(settings, run_id, f"{type(error).__name__}: {error}")
            raise
        report_path, report_error = None, None
        try:
            if moves is not None:
                steps.announce(settings, run_id, as_of, outcome, moves)
            report_path = timed("report", lambda: steps.publish(settings, extract, outcome, run_id, flow_run_id))
        except Exception as error:
            if settings.dry_run:  # nothing was written: the run simply failed
                raise
            report_error = f"{type(error).__name__}: {error}"
            steps.publish_failed(settings, run_id, report_error)
    return RunResult(run_id, as_of, extract, outcome, moves, report_path, report_error, notes, seconds)


SUMMARY_PROFILE_COLUMNS = [
    "segment_id",
    "segment_name",
    "customers",
    "share",
    "purity",
    "stability",
    "mean_recency_days",
    "mean_frequency",
    "mean_monetary",
    "attribute_means",
]


def run_summary(result: RunResult, *, dry_run: bool) -> dict[str, Any]:
    """What the flow returns (and `segments run` prints): the run's figures as plain data."""
    outcome, counts, state = result.outcome, result.extract.counts, result.extract.state
    return {
        "run_id": result.run_id,
        "as_of": result.as_of.isoformat(),
        "dry_run": dry_run,
        "customers": len(outcome.segments.assignments),
        "n_clusters": outcome.n_clusters,
        "k_reason": outcome.k_reason,
        "model_action": outcome.decision.action,
        "model_reason": outcome.decision.reason,
        "model_version": outcome.model_version,
        "extract_mode": "full" if state is None else state.mode,
        "extract_reason": None if state is None else state.reason,
        "customers_recomputed": len(outcome.segments.assignments) if state is None else state.customers_recomputed,
        "reconciliation_differences": None if state is None else state.reconciliation_differences,
        "rows_scanned": counts.rows_scanned,
        "rejected_by_reason": counts.rejected_by_reason,
        "guest_rows": counts.guest_rows,
        "guest_net_amount": counts.guest_net_amount,
        "notes": result.notes,
        "segments": outcome.segments.profiles[SUMMARY_PROFILE_COLUMNS].to_dict(orient="records"),
        "customers_moved": None if result.moves is None else result.moves.customers_moved,
        "moved_by_refit": None if result.moves is None else result.moves.moved_by_refit,
        "report_path": None if result.report_path is None else str(result.report_path),
        "report_error": result.report_error,
        "algorithm_comparison": outcome.comparison,
    }
