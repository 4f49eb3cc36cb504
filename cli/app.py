"""The ``segments`` command line: ``run`` one segmentation, ``demo`` the whole pipeline on synthetic
data in an embedded SQLite file, and the commands around them (report, export, score, ...).

Each command reads its options, calls the steps in ``tasks/`` (or the flow) and prints. Errors a user
can fix print one line and exit with status 1; configuration comes from options, then ``SEGMENTS_*``
environment variables (and ``.env``), then defaults.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.display import console, errors, print_comparison, print_summary, progress_display
from cli.options import (
    AsOf,
    CompareAlgorithms,
    DryRun,
    ExportFormatChoice,
    Force,
    FullRefresh,
    IfExists,
    KMax,
    KMin,
    LookbackDays,
    ModelPolicy,
    NClusters,
    ReportOutput,
    SampleSize,
    Verbose,
)
from tasks.errors import ConfigurationError, PublishError, SegmentsError

app = typer.Typer(
    name="segments",
    help="Turn purchase transactions into stable, readable customer segments for BI tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
DEMO_CUSTOMERS = 3_000


def _fail(error: SegmentsError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def _prepare_prefect_environment(verbose: bool = False) -> None:
    # Settings for the temporary Prefect server `segments serve` starts when PREFECT_API_URL is unset (a
    # server of the user's own is not affected); users' own settings win. It can need more than its default
    # 20 s to start on a small machine, and it sends no usage telemetry: the user did not ask for a
    # server, and offline its attempt printed an ERROR line in every run.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's log lines go to its server and logs; the terminal shows the progress and the summary
    # (and a failure as one line), unless asked for them. Read when Prefect first configures logging.
    if verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def _run_flow(options: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
    """Check the settings and the source (one line on error), then run the flow with a progress display."""
    from tasks.extract.attributes import check_customer_table
    from tasks.extract.source import check_source
    from tasks.settings import load_settings

    flags = ("dry_run", "force", "compare_algorithms", "full_refresh")
    try:
        # an unset flag is "not given", so SEGMENTS_DRY_RUN can still turn it on
        settings = load_settings(**(options | {flag: options.get(flag) or None for flag in flags}))
        if not settings.attributes_only:
            check_source(settings)
        if settings.customer_table and settings.attribute_features:
            check_customer_table(settings)
    except SegmentsError as error:
        raise _fail(error) from None

    from tasks import progress

    try:
        with progress_display() as listener, progress.listening(listener):
            if not prefect_api_url():
                # No Prefect server to report to: the run's record is in segment_runs, so the plain
                # steps run here rather than a temporary server nobody would look at.
                from flows.wiring import run_segmentation, run_summary

                return run_summary(run_segmentation(settings), dry_run=settings.dry_run)
            _prepare_prefect_environment(verbose)
            from flows.segment_customers import segment_customers

            return segment_customers(**options)
    except SegmentsError as error:  # printed after the display closes, so the error is the last line
        raise _fail(error) from None


def prefect_api_url() -> str | None:
    """The Prefect server runs report to: ``PREFECT_API_URL`` from the environment, else Prefect's
    own settings (a profile set by ``prefect config set`` or ``prefect cloud login``), read only when
    a profile file exists, since importing Prefect costs a second."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    if not profiles.exists():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@app.command()
def run(
    as_of: AsOf = None,
    n_clusters: NClusters = None,
    k_min: KMin = None,
    k_max: KMax = None,
    model_policy: ModelPolicy = None,
    lookback_days: LookbackDays = None,
    sample_size: SampleSize = None,
    dry_run: DryRun = False,
    force: Force = False,
    compare_algorithms: CompareAlgorithms = False,
    full_refresh: FullRefresh = False,
    verbose: Verbose = False,
) -> None:
    """Run one segmentation: read the transactions (SEGMENTS_SOURCE_URL, else the database), write the
    segments to the database (SEGMENTS_DATABASE_URL) and the HTML report (SEGMENTS_REPORT_PATH, default
    segments_report.html)."""
    summary = _run_flow(
        {
            "as_of": as_of.date() if as_of else None,
            "n_clusters": n_clusters,
            "k_min": k_min,
            "k_max": k_max,
            "model_policy": model_policy.value if model_policy else None,
            "lookback_days": lookback_days,
            "sample_size": sample_size,
            "dry_run": dry_run,
            "force": force,
            "compare_algorithms": compare_algorithms,
            "full_refresh": full_refresh,
        },
        verbose,
    )
    print_summary(summary)
    _fail_on_report_error(summary)


def _fail_on_report_error(summary: dict[str, Any]) -> None:
    """After the summary: a run whose outputs committed but whose report failed exits non-zero."""
    if summary.get("report_error"):
        raise _fail(
            PublishError(
                f"run {summary['run_id']} wrote its outputs (recorded as succeeded) but the report failed: "
                f"{summary['report_error']}"
            )
        )


@app.command()
def demo(
    path: Annotated[Path, typer.Option(help="SQLite file to create for the demo.")] = Path("segments_demo.db"),
    customers: Annotated[
        int, typer.Option(min=10, max=1_000_000, help="Synthetic customers to generate.")
    ] = DEMO_CUSTOMERS,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 7,
    verbose: Verbose = False,
) -> None:
    """Generate synthetic transactions in an SQLite file, segment them, print the segments and write
    the report; a .env in this folder then points every other command at the demo's data."""
    from tasks.demo import load_demo_transactions, point_env_file_at

    path = path.resolve()
    as_of = datetime.now(UTC).date()
    rows = load_demo_transactions(path, customers=customers, as_of=as_of, seed=seed)
    console.print(f"Generated {rows:,} transactions of {customers:,} customers (seed {seed}) in {path}")
    # The demo's own file and column mapping win over any SEGMENTS_* settings of the environment.
    os.environ.update(
        {
            "SEGMENTS_DATABASE_URL": f"sqlite:///{path}",
            "SEGMENTS_SOURCE_TABLE": "transactions",
            "SEGMENTS_CUSTOMER_ID_COLUMN": "customer_id",
            "SEGMENTS_OCCURRED_AT_COLUMN": "occurred_at",
            "SEGMENTS_AMOUNT_COLUMN": "amount",
            "SEGMENTS_QUANTITY_COLUMN": "",
            "SEGMENTS_UNIT_PRICE_COLUMN": "",
            "SEGMENTS_ORDER_ID_COLUMN": "order_id",
            "SEGMENTS_CUSTOMER_TABLE": "",
        }
    )
    summary = _run_flow({"as_of": as_of}, verbose)
    print_summary(summary)
    _fail_on_report_error(summary)
    if point_env_file_at(path, Path.cwd()):
        where = "; .env in this folder points every segments command at it"
    else:
        where = (
            f". Your .env was left as it is: to use the demo's data, set SEGMENTS_DATABASE_URL=sqlite:///{path} "
            "and SEGMENTS_ORDER_ID_COLUMN=order_id"
        )
    customer = f"C{min(42, customers - 1):06d}"
    console.print(
        f"\nThe demo's transactions and segments are in {path} (tables transactions, customer_segments, "
        f"segment_profiles, segment_runs, customer_segment_history){where}.\nTry next:\n"
        "  uv run segments report --output report.html\n"
        "  uv run segments export --format csv --output segments.csv\n"
        f"  uv run segments score --customer-id {customer}\n"
        "  uv run segments compare\n"
        "  uv run segments run",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def score(
    customer_id: Annotated[str, typer.Option(help="The customer to score, as in the source's id column.")],
    as_of: AsOf = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Compute one customer's features now and score them with the stored model (writes nothing)."""
    from tasks.on_demand import score_customer
    from tasks.settings import load_settings

    try:
        result = score_customer(load_settings(), customer_id, as_of.date() if as_of else None)
    except SegmentsError as error:
        raise _fail(error) from None
    if as_json:
        payload = {
            "customer_id": result.customer_id,
            "as_of": result.as_of.isoformat(),
            "segment_id": result.segment_id,
            "segment_name": result.segment_name,
            "model_version": result.model_version,
            "distance_to_centroid": result.distance,
            "features": result.features,
            "seconds": round(result.seconds, 4),
        }
        console.print_json(json.dumps(payload))
        return
    table = Table(title=f"Customer {result.customer_id} as of {result.as_of}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("segment", f"{result.segment_id} {result.segment_name}")
    for name, value in result.features.items():
        table.add_row(name, "-" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
    table.add_row("model version", str(result.model_version))
    console.print(table)
    console.print(f"Scored in {result.seconds:.3f} s", highlight=False)


def _report(output: Path | None, *, compare: bool) -> None:
    from tasks.report.publish import write_latest_report
    from tasks.settings import load_settings

    try:
        settings = load_settings()
        with console.status("Reading the latest run and drawing the charts..."):
            comparison = None
            if compare:
                from tasks.on_demand import compare_latest_run

                comparison = compare_latest_run(settings)
            path, data, rendered = write_latest_report(settings, output)
    except SegmentsError as error:
        raise _fail(error) from None
    if comparison:
        print_comparison(comparison)
    console.print(
        f"Report of run {data.run['run_id']} (as of {data.run['as_of']}): {path} ({path.stat().st_size:,} bytes; "
        f"charts: {', '.join(chart.key for chart in rendered.charts)})",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def report(output: ReportOutput = None, compare_algorithms: CompareAlgorithms = False) -> None:
    """Write the HTML report of the latest successful run: elbow, silhouette by K, sizes, heatmap,
    scatter plots, profiles and transitions, in one self-contained file."""
    _report(output, compare=compare_algorithms)


@app.command()
def compare(output: ReportOutput = None) -> None:
    """Fit KMeans, a Gaussian mixture, Ward clustering and DBSCAN on a sample of the latest run's
    customers, print their silhouette, Davies-Bouldin, sizes and noise share, keep the comparison on
    the run and write the report with it. KMeans stays the production model."""
    _report(output, compare=True)


@app.command()
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    file_format: Annotated[ExportFormatChoice, typer.Option("--format", help="csv or parquet.")] = (
        ExportFormatChoice.csv
    ),
) -> None:
    """Export the current segments with their features (and the customer table's columns when
    SEGMENTS_CUSTOMER_TABLE is set) to CSV or Parquet."""
    from tasks.report.export import export_segments
    from tasks.settings import load_settings

    try:
        with console.status(f"Exporting segments to {output}..."):
            rows = export_segments(load_settings(), output.resolve(), file_format.value)
    except SegmentsError as error:
        raise _fail(error) from None
    console.print(f"Exported {rows:,} customers to {output.resolve()} ({file_format.value})", highlight=False)


@app.command("load-csv")
def load_csv(
    path: Annotated[Path, typer.Argument(help="CSV, TSV or Parquet file.")],
    table: Annotated[str, typer.Option(help="Table to create, optionally schema.table.")],
    if_exists: Annotated[IfExists, typer.Option(help="When the table exists: fail, replace or append.")] = (
        IfExists.FAIL
    ),
) -> None:
    """Load a CSV or Parquet file into a table of the configured database, column names made
    snake_case (``Annual Income (k$)`` becomes ``annual_income_k``)."""
    from tasks.extract.load_file import load_file
    from tasks.settings import load_settings

    try:
        settings = load_settings()
        with console.status(f"Loading {path.name}..."):
            rows, renamed = load_file(settings, path, table, if_exists.value)
    except ValueError as error:
        raise _fail(ConfigurationError(str(error))) from None
    except SegmentsError as error:
        raise _fail(error) from None
    changed = {old: new for old, new in renamed.items() if old != new}
    console.print(f"Loaded {rows:,} rows into {table} of {settings.masked_database_url()}", highlight=False)
    if changed:
        console.print(
            "Columns renamed: " + ", ".join(f"{old!r} -> {new}" for old, new in changed.items()), highlight=False
        )


@app.command()
def index(
    create: Annotated[
        bool, typer.Option("--create", help="Create it now (needs the source table's owner), then VACUUM ANALYZE.")
    ] = False,
) -> None:
    """Print (or create) the covering index that lets PostgreSQL stream the extract's aggregation from
    an index-only scan, with no sort and no hash of every order; with SEGMENTS_CHANGED_AT_COLUMN, also
    the index on it that incremental nights find their rows by."""
    from tasks.extract.covering_index import covering_index_statement, create_source_indexes
    from tasks.settings import load_settings

    try:
        settings = load_settings()
        if settings.dialect != "postgresql" or settings.attributes_only:
            raise ConfigurationError("the covering index is for a PostgreSQL transactions source")
        if not create:
            console.print(covering_index_statement(settings), highlight=False, markup=False, soft_wrap=True)
            return
        with console.status("Creating the index concurrently, then VACUUM ANALYZE (minutes on a large table)..."):
            indexes = create_source_indexes(settings)
    except SegmentsError as error:
        raise _fail(error) from None
    for built in indexes:
        console.print(built.statement, highlight=False, markup=False, soft_wrap=True)
        done = {
            "created": "Created.",
            "kept": "It was already there, valid and on these columns: kept it (the source was analyzed again).",
            "rebuilt": f"Dropped the index of this name and built it again: {built.reason}.",
        }
        console.print(done[built.action], highlight=False, markup=False)


@app.command()
def grants(
    job_role: Annotated[str, typer.Option(help="Role the job connects as.")] = "segments_job",
    bi_role: Annotated[str, typer.Option(help="Role BI tools connect as (read-only).")] = "segments_bi",
) -> None:
    """Print the PostgreSQL grants of a least-privilege job role and a read-only BI role, for the
    configured source table and output schema, for an administrator to review and run."""
    from tasks.load.grants import render_grants
    from tasks.settings import load_settings

    try:
        settings = load_settings()
        if settings.dialect != "postgresql":
            raise ConfigurationError("grants are for PostgreSQL; set SEGMENTS_DATABASE_URL to a postgresql URL")
        sql = render_grants(settings, job_role=job_role, bi_role=bi_role)
    except ValueError as error:
        raise _fail(ConfigurationError(str(error))) from None
    except SegmentsError as error:
        raise _fail(error) from None
    console.print(sql, highlight=False, markup=False, soft_wrap=True)


@app.command()
def migrate() -> None:
    """Upgrade the output tables (SEGMENTS_OUTPUT_SCHEMA) to this release's schema. Every run does it
    before it writes; this does it now, for example before BI tools are pointed at a new column."""
    from tasks.load.schema import migrate as migrate_outputs
    from tasks.settings import load_settings

    try:
        before, after = migrate_outputs(load_settings())
    except SegmentsError as error:
        raise _fail(error) from None
    if before == after:
        console.print(f"The output tables are up to date (revision {after}).", highlight=False)
    else:
        console.print(f"Upgraded the output tables from revision {before or '(none)'} to {after}.", highlight=False)


@app.command()
def serve(
    prefect_file: Annotated[
        Path | None,
        typer.Option(help="Deployment file to serve [default: deployments/prefect.yaml of this project]."),
    ] = None,
) -> None:
    """Serve the nightly deployment from this process, without a work pool: the schedule, time zone,
    parameters and concurrency limit of deployments/prefect.yaml. Runs until stopped (Ctrl-C)."""
    from tasks.deployment import PREFECT_FILE, load_deployment

    try:
        spec = load_deployment(path=prefect_file or PREFECT_FILE)
    except SegmentsError as error:
        raise _fail(error) from None
    if not os.environ.get("PREFECT_API_URL"):
        errors.print(
            "warning: PREFECT_API_URL is not set, so the schedule lives in a temporary server that stops with "
            "this process; start one with `prefect server start` and export PREFECT_API_URL to keep runs and "
            "see them in the UI",
            highlight=False,
            soft_wrap=True,
        )
    _prepare_prefect_environment()
    from prefect import serve as prefect_serve

    from flows.segment_customers import runner_deployment

    console.print(
        f"Serving {spec.name}: cron '{spec.cron}' ({spec.timezone}), at most {spec.concurrency_limit} run at a time "
        f"({spec.collision_strategy})",
        highlight=False,
    )
    prefect_serve(runner_deployment(spec))


def main() -> None:
    """Entry point of the ``segments`` command."""
    app()
