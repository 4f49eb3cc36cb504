"""What a run reports to people: the markdown run summary and the profile table of its artifacts.

Charts are drawn with Unicode blocks, so they render wherever markdown does (the Prefect UI, a terminal,
a chat message) without images.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import insights, progress
from tasks.extract import ExtractResult
from tasks.files import write_file_atomically
from tasks.load import describe_outputs
from tasks.settings import SegmentSettings
from tasks.steps import ModelOutcome, run_record_fields

BAR_WIDTH = 30


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``value`` relative to ``largest``, in eighths of a character."""
    if largest <= 0 or not math.isfinite(value) or value <= 0:
        return ""
    eighths = round(value / largest * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[rest]


def profile_rows(profiles: pd.DataFrame) -> list[dict[str, Any]]:
    """The profile table of the artifact: one row per segment, rounded for reading."""
    rows = []
    for profile in profiles.sort_values("segment_id").to_dict(orient="records"):
        rows.append(
            {
                "segment_id": int(profile["segment_id"]),
                "segment": profile["segment_name"],
                "customers": int(profile["customers"]),
                "share": f"{profile['share']:.1%}",
                "mean_recency_days": _round(profile["mean_recency_days"], 0),
                "mean_frequency": _round(profile["mean_frequency"], 1),
                "mean_monetary": _round(profile["mean_monetary"], 2),
                "median_monetary": _round(profile["median_monetary"], 2),
                "description": profile["description"],
                "recommended_action": profile["recommended_action"],
            }
        )
    return rows


def run_summary_markdown(
    settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, *, run_id: str, flow_run_id: str | None
) -> str:
    """The run summary: what was read and rejected, the model decision, K and quality, charts of segment
    sizes and of the elbow, and where the outputs are (no credentials)."""
    counts = extract.counts
    profiles = outcome.segments.profiles.sort_values("segment_id")
    mode = " (dry run: nothing written)" if settings.dry_run else ""
    lines = [
        f"# Customer segments as of {extract.as_of.isoformat()}{mode}",
        "",
        f"Run `{run_id}`" + (f", flow run `{flow_run_id}`" if flow_run_id else "") + ".",
        "",
        "## Input",
        "",
        "| | rows |",
        "|---|---:|",
        f"| scanned | {counts.rows_scanned:,} |",
        f"| in the window | {counts.rows_in_window:,} |",
        f"| before the window (lookback) | {counts.rows_before_window:,} |",
    ]
    lines += [
        f"| rejected: {reason.replace('_', ' ')} | {count:,} |" for reason, count in counts.rejected_by_reason.items()
    ]
    assignments = outcome.segments.assignments
    clustered = int((assignments["segment_id"] != 0).sum())
    metrics = outcome.metrics
    lines += [
        "",
        f"**{len(assignments):,} customers**, {clustered:,} with net purchases clustered.",
        "",
        "## Model",
        "",
        f"- Action: **{outcome.decision.action}**: {outcome.decision.reason}",
        f"- Model version {outcome.model_version}; K = {outcome.n_clusters} ({outcome.k_reason})",
        f"- Silhouette {_metric(metrics.get('silhouette'))}, "
        f"Davies-Bouldin {_metric(metrics.get('davies_bouldin'))}, "
        f"Calinski-Harabasz {_metric(metrics.get('calinski_harabasz'), 0)}, "
        f"inertia {_metric(metrics.get('inertia'), 1)}",
    ]
    psi = outcome.decision.figures.get("psi")
    if psi:
        lines.append("- Drift (PSI): " + ", ".join(f"{name} {value:.3f}" for name, value in psi.items()))
    changes = outcome.segment_changes
    lines += [
        f"- Segment ids kept {changes['kept']}, new {changes['new']}, retired {changes['retired']}",
        "",
        "## Segment sizes",
        "",
        "| segment | customers | |",
        "|---|---:|---|",
    ]
    largest = float(profiles["customers"].max()) if len(profiles) else 0.0
    for profile in profiles.to_dict(orient="records"):
        lines.append(
            f"| {profile['segment_id']} {profile['segment_name']} | {int(profile['customers']):,} "
            f"({profile['share']:.1%}) | `{bar(profile['customers'], largest)}` |"
        )
    if outcome.elbow is not None:
        elbow = outcome.elbow
        lines += [
            "",
            "## Elbow",
            "",
            "| K | within-cluster sum of squares | | silhouette |",
            "|---:|---:|---|---:|",
        ]
        for k, inertia, silhouette in zip(elbow.ks, elbow.inertias, elbow.silhouettes, strict=True):
            marker = " ← knee" if k == elbow.knee else ""
            chosen = " **chosen**" if k == outcome.n_clusters else ""
            chart = f"`{bar(inertia, elbow.inertias[0])}`{marker}{chosen}"
            lines.append(f"| {k} | {inertia:,.1f} | {chart} | {_metric(silhouette)} |")
    lines += ["", "## Outputs", "", describe_outputs(settings) + "."]
    return "\n".join(lines) + "\n"


def _round(value: Any, digits: int) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _metric(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


PROFILES_ARTIFACT_KEY = "segment-profiles"
SUMMARY_ARTIFACT_KEY = "segment-run-summary"


@task(
    name="publish-run-artifacts", task_run_name="publish the run summary", cache_policy=NO_CACHE, persist_result=False
)
def publish_run_artifacts(
    settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, run_id: str, flow_run_id: str | None
) -> None:
    """The profile table and the markdown run summary as Prefect artifacts with stable keys, so the
    UI shows each run's next to the previous ones."""
    create_table_artifact(
        key=PROFILES_ARTIFACT_KEY,
        table=profile_rows(outcome.segments.profiles),
        description=f"Segment profiles as of {extract.as_of.isoformat()}",
    )
    create_markdown_artifact(
        key=SUMMARY_ARTIFACT_KEY,
        markdown=run_summary_markdown(settings, extract, outcome, run_id=run_id, flow_run_id=flow_run_id),
        description=f"Run summary as of {extract.as_of.isoformat()}",
    )


REPORT_ARTIFACT_KEY = "segment-report"


def write_run_report(
    settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, run_id: str
) -> tuple[Path | None, str]:
    """Build the run's report: from the output tables after a write, from memory for a dry run. Writes
    the HTML file to ``settings.report_path`` (unless unset) and returns its path and the markdown with
    the same charts, for the artifact."""
    if settings.dry_run:
        run = run_record_fields(extract, outcome) | {"run_id": run_id, "dry_run": True}
        data = insights.report_data_from_run(
            run,
            outcome.segments.assignments,
            outcome.segments.profiles,
            outcome.model,
            elbow=outcome.elbow,
            comparison=outcome.comparison,
            random_state=settings.random_state,
        )
    else:
        data = insights.report_data_from_outputs(settings)
    rendered = insights.render_report(data, outputs=describe_outputs(settings))
    path = None
    if settings.report_path:
        path = Path(settings.report_path).resolve()
        write_file_atomically(path, rendered.html)
    return path, rendered.markdown


@task(name="write-report", task_run_name="write the HTML report", cache_policy=NO_CACHE, persist_result=False)
def publish_report(settings: SegmentSettings, extract: ExtractResult, outcome: ModelOutcome, run_id: str) -> str | None:
    logger = get_run_logger()
    started = time.perf_counter()
    with progress.step("report"):
        path, markdown = write_run_report(settings, extract, outcome, run_id)
    create_markdown_artifact(
        key=REPORT_ARTIFACT_KEY, markdown=markdown, description=f"Segment report as of {extract.as_of.isoformat()}"
    )
    if path is not None:
        logger.info(
            "Report written to %s (%s bytes) in %.2f s", path, f"{path.stat().st_size:,}", time.perf_counter() - started
        )
    return None if path is None else str(path)
