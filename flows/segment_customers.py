"""The ``segment-customers`` flow: the run's wiring (:func:`flows.wiring.run_segmentation`) with its
steps as Prefect tasks (:data:`PREFECT_STEPS`), a validated form of parameters for the Prefect UI, and
the deployment ``segments serve`` serves."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.wiring import Steps, run_segmentation, run_summary
from tasks import prefect_tasks
from tasks.deployment import DeploymentSpec
from tasks.errors import PublishError
from tasks.extract.result import default_as_of
from tasks.load.schema import describe_outputs
from tasks.run_form import COLUMN_NAME, TABLE_OR_PATH, column_parameter, form_field
from tasks.settings import load_settings

FLOW_NAME = "segment-customers"


PREFECT_STEPS = Steps(
    start=prefect_tasks.record_run_start_task,
    extract=prefect_tasks.extract_task,
    stored_model=prefect_tasks.load_stored_model_task,
    model=prefect_tasks.model_task,
    gates=prefect_tasks.data_gates_task,
    write=prefect_tasks.write_task,
    fail=prefect_tasks.record_run_failure_task,
    announce=prefect_tasks.announce_task,
    publish=prefect_tasks.publish_task,
    publish_failed=prefect_tasks.record_report_error_task,
)


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
        form_field("Fewest segments (automatic)", "Smallest K the automatic choice may pick. Empty: 4.", ge=2, le=30),
    ] = None,
    k_max: Annotated[
        int | None,
        form_field("Most segments (automatic)", "Largest K the automatic choice may pick. Empty: 8.", ge=2, le=30),
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
    source_table: Annotated[
        str | None,
        form_field(
            "Source table",
            "Transactions table or view (schema.table), or with DuckDB or Spark a path of Parquet or CSV files. "
            "Empty: SEGMENTS_SOURCE_TABLE.",
            **TABLE_OR_PATH,
        ),
    ] = None,
    customer_id_column: Annotated[str | None, column_parameter("Customer id", "SEGMENTS_CUSTOMER_ID_COLUMN")] = None,
    occurred_at_column: Annotated[str | None, column_parameter("Order time", "SEGMENTS_OCCURRED_AT_COLUMN")] = None,
    amount_column: Annotated[str | None, column_parameter("Amount", "SEGMENTS_AMOUNT_COLUMN")] = None,
    quantity_column: Annotated[str | None, column_parameter("Quantity", "SEGMENTS_QUANTITY_COLUMN")] = None,
    unit_price_column: Annotated[str | None, column_parameter("Unit price", "SEGMENTS_UNIT_PRICE_COLUMN")] = None,
    order_id_column: Annotated[str | None, column_parameter("Order id", "SEGMENTS_ORDER_ID_COLUMN")] = None,
    changed_at_column: Annotated[
        str | None,
        form_field(
            "Change column",
            "Load timestamp or increasing row id of the source: nights then recompute only customers with "
            "changed rows (PostgreSQL). Empty: SEGMENTS_CHANGED_AT_COLUMN.",
            **COLUMN_NAME,
        ),
    ] = None,
    full_refresh: Annotated[
        bool,
        form_field(
            "Full refresh",
            "With a change column: aggregate every row tonight and count the customers the nights got wrong.",
        ),
    ] = False,
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
    source_url_secret: Annotated[
        str | None,
        form_field(
            "Source URL secret",
            "Name of a Prefect Secret block holding where the transactions are read (an SQLAlchemy URL, "
            "sc://host:port or local[N]). Empty: the worker's SEGMENTS_SOURCE_URL, else the database.",
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
        database_url=prefect_tasks.read_secret(database_url_secret) if database_url_secret else None,
        source_url=prefect_tasks.read_secret(source_url_secret) if source_url_secret else None,
        source_table=source_table,
        customer_id_column=customer_id_column,
        occurred_at_column=occurred_at_column,
        amount_column=amount_column,
        quantity_column=quantity_column,
        unit_price_column=unit_price_column,
        order_id_column=order_id_column,
        changed_at_column=changed_at_column,
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
        full_refresh=full_refresh or None,
    )
    logger = get_run_logger()
    logger.info(
        "Segmenting %s from %s as of %s",
        settings.source_table,
        settings.masked_source_url(),
        settings.as_of or default_as_of(),
    )
    result = run_segmentation(settings, PREFECT_STEPS, flow_run_id=flow_run.get_id())
    outcome = result.outcome
    logger.info(
        "%s %s customers into %s segments; outputs: %s",
        "Dry run: would write" if settings.dry_run else "Wrote",
        f"{len(outcome.segments.assignments):,}",
        outcome.n_clusters,
        describe_outputs(settings),
    )
    if result.report_error:
        # the outputs are live and the run record says so; the flow run still fails, so that
        # whoever watches the Prefect UI sees the report or artifacts are missing
        raise PublishError(
            f"run {result.run_id} wrote its outputs ({describe_outputs(settings)}) but publishing failed: "
            f"{result.report_error}"
        )
    return run_summary(result, dry_run=settings.dry_run)


def runner_deployment(spec: DeploymentSpec) -> Any:
    """The deployment ``segments serve`` serves: this flow with the spec's schedule, time zone,
    parameters and concurrency limit, run by the serving process instead of a work pool."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    return segment_customers.to_deployment(
        name=spec.name,
        schedules=[Cron(spec.cron, timezone=spec.timezone)],
        parameters=spec.parameters,
        concurrency_limit=ConcurrencyLimitConfig(
            limit=spec.concurrency_limit, collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy)
        ),
        tags=spec.tags,
        description="Served by `segments serve` (no work pool).",
    )
