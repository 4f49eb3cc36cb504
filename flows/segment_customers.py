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


def form_field(title: str, description: str, **constraints: Any) -> Any:
    """A parameter's label and one-line help in the UI's run form, with its validation bounds. Prefect
    sets a parameter's schema title and description itself; `json_schema_extra` is applied after it."""
    return Field(json_schema_extra={"title": title, "description": description}, **constraints)


# Names as the UI form and the server validate them (the same pattern the settings enforce).
COLUMN_NAME = {"pattern": IDENTIFIER_PATTERN.pattern, "max_length": 63}
TABLE_NAME = {"pattern": r"^(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}$", "max_length": 127}


def column_parameter(role: str, variable: str) -> Any:
    return form_field(
        f"{role} column", f"Column of the source holding the {role.lower()}. Empty: {variable}.", **COLUMN_NAME
    )


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
    as_of: Annotated[
        date | None,
        form_field(
            "As-of date", "Rows dated before this day count. Empty: today (UTC), so a run sees up to yesterday."
        ),
    ] = None,
    n_clusters: Annotated[
        int | None,
        form_field("Number of segments", "Empty: chosen automatically within the K range below.", ge=2, le=30),
    ] = None,
    k_min: Annotated[
        int | None,
        form_field("Fewest segments (automatic)", "Smallest K the automatic choice may pick. Empty: 2.", ge=2, le=30),
    ] = None,
    k_max: Annotated[
        int | None,
        form_field("Most segments (automatic)", "Largest K the automatic choice may pick. Empty: 10.", ge=2, le=30),
    ] = None,
    model_policy: Annotated[
        Literal["auto", "reuse", "refit"] | None,
        form_field(
            "Model policy",
            "auto: reuse the stored model unless it is missing, too old or the data drifted; "
            "reuse: always score with the stored model; refit: always fit a new one. Empty: auto.",
        ),
    ] = None,
    lookback_days: Annotated[
        int | None,
        form_field(
            "Lookback (days)",
            "Only rows of the last N days before the as-of date count. Empty: all history.",
            ge=1,
            le=36_500,
        ),
    ] = None,
    sample_size: Annotated[
        int | None,
        form_field(
            "Fit sample size",
            "KMeans fits on at most this many customers; every customer is then assigned. Empty: 200,000.",
            ge=100,
            le=10_000_000,
        ),
    ] = None,
    dry_run: Annotated[
        bool, form_field("Dry run", "Compute and report, but write nothing to the output tables.")
    ] = False,
    force: Annotated[
        bool,
        form_field(
            "Run past the data gates", "Write even when too many rows are rejected or customers dropped sharply."
        ),
    ] = False,
    compare_algorithms: Annotated[
        bool,
        form_field("Compare algorithms", "Also fit a Gaussian mixture, Ward and DBSCAN beside KMeans, for the report."),
    ] = False,
    partitions: Annotated[
        int | None,
        form_field(
            "Extract partitions",
            "Aggregate in this many customer-id ranges at once, on Dask. Empty: SEGMENTS_PARTITIONS, else 1.",
            ge=1,
            le=64,
        ),
    ] = None,
    source_table: Annotated[
        str | None,
        form_field(
            "Source table",
            "Transactions table or view, optionally schema.table. Empty: SEGMENTS_SOURCE_TABLE.",
            **TABLE_NAME,
        ),
    ] = None,
    customer_id_column: Annotated[str | None, column_parameter("Customer id", "SEGMENTS_CUSTOMER_ID_COLUMN")] = None,
    occurred_at_column: Annotated[str | None, column_parameter("Order time", "SEGMENTS_OCCURRED_AT_COLUMN")] = None,
    amount_column: Annotated[str | None, column_parameter("Amount", "SEGMENTS_AMOUNT_COLUMN")] = None,
    quantity_column: Annotated[str | None, column_parameter("Quantity", "SEGMENTS_QUANTITY_COLUMN")] = None,
    unit_price_column: Annotated[str | None, column_parameter("Unit price", "SEGMENTS_UNIT_PRICE_COLUMN")] = None,
    order_id_column: Annotated[str | None, column_parameter("Order id", "SEGMENTS_ORDER_ID_COLUMN")] = None,
    output_schema: Annotated[
        str | None,
        form_field(
            "Output schema", "PostgreSQL schema of the output tables. Empty: SEGMENTS_OUTPUT_SCHEMA.", **COLUMN_NAME
        ),
    ] = None,
    database_url_secret: Annotated[
        str | None,
        form_field(
            "Database URL secret",
            "Name of a Prefect Secret block holding the database URL. Empty: the worker's SEGMENTS_DATABASE_URL.",
            min_length=1,
            max_length=255,
        ),
    ] = None,
) -> dict[str, Any]:
    """Segment customers from their transactions as of a date and write the segments for BI.

    Parameters left empty fall back to ``SEGMENTS_*`` environment variables, then to defaults; each
    parameter's title and description (the run form's labels) say which.
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
