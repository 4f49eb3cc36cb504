"""The run's steps as plain function calls, without Prefect: for benchmarks, tests and embedding.

The flow in ``flows/segment_customers.py`` runs the same steps as Prefect tasks.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from tasks import load, steps
from tasks.attributes import extract_run_input
from tasks.extract import ExtractResult, default_as_of
from tasks.locking import run_lock
from tasks.memory import return_freed_memory
from tasks.settings import SegmentSettings


@dataclass(frozen=True)
class PipelineRun:
    run_id: str
    extract: ExtractResult
    outcome: steps.ModelOutcome
    seconds: dict[str, float]  # wall time of each step: extract, model, write


def run_pipeline(settings: SegmentSettings, as_of: date | None = None) -> PipelineRun:
    """Record, extract, decide/fit, and write one run; a failure is recorded on the run and re-raised."""
    return_freed_memory()
    with contextlib.nullcontext() if settings.dry_run else run_lock(settings):
        return _run(settings, as_of)


def _run(settings: SegmentSettings, as_of: date | None) -> PipelineRun:
    run_as_of = as_of or settings.as_of or default_as_of()
    run_id = str(uuid.uuid4())
    started = datetime.now(UTC)
    if not settings.dry_run:
        load.start_run(settings, run_id=run_id, flow_run_id=None, as_of=run_as_of, started_at=started)
    seconds: dict[str, float] = {}
    try:
        clock = time.perf_counter()
        extract = extract_run_input(settings, run_as_of)
        seconds["extract"] = time.perf_counter() - clock
        clock = time.perf_counter()
        stored = load.load_latest_model(settings)
        outcome = steps.segment_features(extract, settings, run_id=run_id, scored_at=started, stored=stored)
        # after the model: a partitioned extract's row counts arrive while it is fitted
        steps.check_data_gates(settings, extract)
        seconds["model"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if not settings.dry_run:
            load.write_run_outputs(
                settings,
                run_id=run_id,
                segments=outcome.segments,
                customer_id_is_integer=extract.customer_id_is_integer,
                run_fields=steps.run_record_fields(extract, outcome),
                new_model=outcome.new_model,
                allowed_names=outcome.allowed_names,
            )
        seconds["write"] = time.perf_counter() - clock
    except Exception as error:
        if not settings.dry_run:
            load.record_run_failure(settings, run_id=run_id, error=f"{type(error).__name__}: {error}")
        raise
    return PipelineRun(run_id=run_id, extract=extract, outcome=outcome, seconds=seconds)
