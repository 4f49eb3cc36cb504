"""The ``segment-customers`` flow: extract -> features -> model -> load. It only wires tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from tasks import steps
from tasks.extract import default_as_of
from tasks.load import describe_outputs
from tasks.settings import load_settings

FLOW_NAME = "segment-customers"
SUMMARY_PROFILE_COLUMNS = [
    "segment_id",
    "segment_name",
    "customers",
    "share",
    "mean_recency_days",
    "mean_frequency",
    "mean_monetary",
]


@flow(name=FLOW_NAME, log_prints=False, validate_parameters=True)
def segment_customers(
    as_of: date | None = None,
    n_clusters: Annotated[int | None, Field(ge=2, le=30)] = None,
    k_min: Annotated[int | None, Field(ge=2, le=30)] = None,
    k_max: Annotated[int | None, Field(ge=2, le=30)] = None,
    model_policy: Literal["refit"] | None = None,
    lookback_days: Annotated[int | None, Field(ge=1, le=36_500)] = None,
    sample_size: Annotated[int | None, Field(ge=100, le=10_000_000)] = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Segment customers from their transactions as of a date and write the segments for BI.

    Parameters left empty fall back to ``SEGMENTS_*`` environment variables, then to defaults:
    ``as_of`` today (UTC), K chosen automatically by the elbow within ``k_min``..``k_max`` (2..10),
    all history (no lookback), 200,000 customers to fit on. ``dry_run`` computes everything and
    writes nothing.
    """
    settings = load_settings(
        as_of=as_of,
        n_clusters=n_clusters,
        k_min=k_min,
        k_max=k_max,
        model_policy=model_policy,
        lookback_days=lookback_days,
        sample_size=sample_size,
        dry_run=dry_run or None,
    )
    run_as_of = settings.as_of or default_as_of()
    run_id = str(uuid.uuid4())
    started_at = datetime.now(UTC)
    logger = get_run_logger()
    logger.info("Segmenting %s as of %s (run %s)", settings.masked_database_url(), run_as_of, run_id)

    if not settings.dry_run:
        steps.record_run_start(settings, run_id, flow_run.get_id(), run_as_of, started_at)
    try:
        extract = steps.extract_features(settings, run_as_of)
        outcome = steps.fit_segments(extract, settings, run_id, started_at)
        if not settings.dry_run:
            steps.write_segments(settings, run_id, extract, outcome)
    except Exception as error:
        if not settings.dry_run:
            steps.record_run_failure(settings, run_id, f"{type(error).__name__}: {error}")
        raise

    profiles = outcome.segments.profiles
    logger.info(
        "%s %s customers into %s segments; outputs: %s",
        "Dry run: would write" if settings.dry_run else "Wrote",
        f"{len(outcome.segments.assignments):,}",
        outcome.fit.n_clusters,
        describe_outputs(settings),
    )
    return {
        "run_id": run_id,
        "as_of": run_as_of.isoformat(),
        "dry_run": settings.dry_run,
        "customers": len(outcome.segments.assignments),
        "n_clusters": outcome.fit.n_clusters,
        "k_reason": outcome.fit.k_reason,
        "rows_scanned": extract.counts.rows_scanned,
        "rejected_by_reason": extract.counts.rejected_by_reason,
        "segments": profiles[SUMMARY_PROFILE_COLUMNS].to_dict(orient="records"),
    }
