"""The ``segment-customers`` flow: extract -> features -> model -> load. It only wires tasks."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from tasks import report, steps
from tasks.extract import default_as_of
from tasks.load import describe_outputs
from tasks.locking import run_lock
from tasks.memory import return_freed_memory
from tasks.settings import IDENTIFIER_PATTERN, load_settings

FLOW_NAME = "segment-customers"
# Names as the UI form and the server validate them (the same pattern the settings enforce).
ColumnName = Annotated[str | None, Field(pattern=IDENTIFIER_PATTERN.pattern, max_length=63)]
TableName = Annotated[
    str | None, Field(pattern=r"^(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$", max_length=127)
]
SUMMARY_PROFILE_COLUMNS = [
    "segment_id",
    "segment_name",
    "customers",
    "share",
    "mean_recency_days",
    "mean_frequency",
    "mean_monetary",
    "attribute_means",
]


@flow(name=FLOW_NAME, log_prints=False, validate_parameters=True)
def segment_customers(
    as_of: date | None = None,
    n_clusters: Annotated[int | None, Field(ge=2, le=30)] = None,
    k_min: Annotated[int | None, Field(ge=2, le=30)] = None,
    k_max: Annotated[int | None, Field(ge=2, le=30)] = None,
    model_policy: Literal["auto", "reuse", "refit"] | None = None,
    lookback_days: Annotated[int | None, Field(ge=1, le=36_500)] = None,
    sample_size: Annotated[int | None, Field(ge=100, le=10_000_000)] = None,
    dry_run: bool = False,
    force: bool = False,
    compare_algorithms: bool = False,
    partitions: Annotated[int | None, Field(ge=1, le=64)] = None,
    source_table: TableName = None,
    customer_id_column: ColumnName = None,
    occurred_at_column: ColumnName = None,
    amount_column: ColumnName = None,
    quantity_column: ColumnName = None,
    unit_price_column: ColumnName = None,
    order_id_column: ColumnName = None,
    output_schema: ColumnName = None,
    database_url_secret: Annotated[str | None, Field(min_length=1, max_length=255)] = None,
) -> dict[str, Any]:
    """Segment customers from their transactions as of a date and write the segments for BI.

    Parameters left empty fall back to ``SEGMENTS_*`` environment variables, then to defaults:
    ``as_of`` today (UTC), K chosen automatically by the elbow within ``k_min``..``k_max`` (2..10),
    all history (no lookback), 200,000 customers to fit on. ``dry_run`` computes everything and
    writes nothing; ``force`` runs past the data gates (rejected-row share, customer drop);
    ``compare_algorithms`` adds KMeans, Gaussian mixture, Ward and DBSCAN side by side to the report;
    ``partitions`` above 1 splits the aggregation into customer-id ranges run in parallel on Dask
    (a local cluster, or the one at ``SEGMENTS_DASK_ADDRESS``). The
    source and output names override the ``SEGMENTS_*`` mapping for this run.
    ``database_url_secret`` names a Prefect Secret block holding the database URL, so that a password
    never becomes a parameter shown in the UI.
    """
    settings = load_settings(
        database_url=steps.read_secret(database_url_secret) if database_url_secret else None,
        source_table=source_table,
        customer_id_column=customer_id_column,
        occurred_at_column=occurred_at_column,
        amount_column=amount_column,
        quantity_column=quantity_column,
        unit_price_column=unit_price_column,
        order_id_column=order_id_column,
        output_schema=output_schema,
        as_of=as_of,
        n_clusters=n_clusters,
        k_min=k_min,
        k_max=k_max,
        model_policy=model_policy,
        lookback_days=lookback_days,
        sample_size=sample_size,
        dry_run=dry_run or None,
        force=force or None,
        compare_algorithms=compare_algorithms or None,
        partitions=partitions,
    )
    run_as_of = settings.as_of or default_as_of()
    run_id = str(uuid.uuid4())
    started_at = datetime.now(UTC)
    logger = get_run_logger()
    return_freed_memory()
    logger.info("Segmenting %s as of %s (run %s)", settings.masked_database_url(), run_as_of, run_id)

    # One run at a time per output; a dry run writes nothing and needs no lock.
    with contextlib.nullcontext() if settings.dry_run else run_lock(settings):
        if not settings.dry_run:
            steps.record_run_start(settings, run_id, flow_run.get_id(), run_as_of, started_at)
        try:
            if settings.partitions > 1:
                extract = steps.extract_on_dask(settings, run_as_of)
            else:
                extract = steps.extract_features(settings, run_as_of)
            stored = steps.load_stored_model(settings)
            outcome = steps.model_segments(extract, settings, run_id, started_at, stored)
            # after the model: a partitioned extract's row counts arrive while it is fitted
            steps.data_gates(settings, extract)
            if not settings.dry_run:
                steps.write_segments(settings, run_id, extract, outcome)
            report.publish_run_artifacts(settings, extract, outcome, run_id, flow_run.get_id())
            report_path = report.publish_report(settings, extract, outcome, run_id)
        except Exception as error:
            if not settings.dry_run:
                steps.record_run_failure(settings, run_id, f"{type(error).__name__}: {error}")
            raise

    profiles = outcome.segments.profiles
    logger.info(
        "%s %s customers into %s segments; outputs: %s",
        "Dry run: would write" if settings.dry_run else "Wrote",
        f"{len(outcome.segments.assignments):,}",
        outcome.n_clusters,
        describe_outputs(settings),
    )
    return {
        "run_id": run_id,
        "as_of": run_as_of.isoformat(),
        "dry_run": settings.dry_run,
        "customers": len(outcome.segments.assignments),
        "n_clusters": outcome.n_clusters,
        "k_reason": outcome.k_reason,
        "model_action": outcome.decision.action,
        "model_reason": outcome.decision.reason,
        "model_version": outcome.model_version,
        "rows_scanned": extract.counts.rows_scanned,
        "rejected_by_reason": extract.counts.rejected_by_reason,
        "segments": profiles[SUMMARY_PROFILE_COLUMNS].to_dict(orient="records"),
        "report_path": report_path,
        "algorithm_comparison": outcome.comparison,
    }
