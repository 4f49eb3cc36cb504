"""The report a run publishes: the HTML file (SEGMENTS_REPORT_PATH) and the same charts as markdown,
for the Prefect artifact."""

from __future__ import annotations

from pathlib import Path

from tasks.extract.result import ExtractResult
from tasks.load.runs import run_record_fields
from tasks.load.schema import describe_outputs
from tasks.model.step import ModelOutcome
from tasks.report import html
from tasks.report.files import write_file_atomically
from tasks.settings import DEFAULT_REPORT_PATH, SegmentSettings


def write_run_report(
    settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, run_id: str
) -> tuple[Path | None, str]:
    """Build the run's report: from the output tables after a write, from memory for a dry run. Writes
    the HTML file to ``settings.report_path`` (unless unset) and returns its path and the markdown with
    the same charts, for the artifact."""
    if settings.dry_run:
        run = run_record_fields(extract, outcome) | {"run_id": run_id, "dry_run": True}
        data = html.report_data_from_run(
            run,
            outcome.segments.assignments,
            outcome.segments.profiles,
            outcome.model,
            elbow=outcome.curve,
            comparison=outcome.comparison,
            random_state=settings.random_state,
        )
    else:
        data = html.report_data_from_outputs(settings)
    rendered = html.render_report(data, outputs=describe_outputs(settings))
    path = None
    if settings.report_path:
        path = Path(settings.report_path).resolve()
        write_file_atomically(path, rendered.html)
    return path, rendered.markdown


def write_latest_report(
    settings: SegmentSettings, output: Path | None
) -> tuple[Path, html.ReportData, html.RenderedReport]:
    """`segments report`: the report of the latest successful run, written to ``output`` (default
    ``SEGMENTS_REPORT_PATH``, else ``segments_report.html``); returns its path, data and charts."""
    data = html.report_data_from_outputs(settings)
    rendered = html.render_report(data, outputs=describe_outputs(settings))
    path = (output or Path(settings.report_path or DEFAULT_REPORT_PATH)).resolve()
    write_file_atomically(path, rendered.html)
    return path, data, rendered
