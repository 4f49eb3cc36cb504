"""The HTML report of a run: every chart the notebooks drew, the profile table, transitions and the
comparison of algorithms, in one self-contained file (images embedded), and the same charts as a
Prefect markdown artifact.

The report shows what the run stored (:func:`report_data_from_outputs`, what ``segments report``
shows for the latest run), or a run held in memory (:func:`report_data_from_run`: a dry run, which
writes no table). It fits nothing: the elbow is the one the run, or the run that trained its model,
recorded.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from tasks.errors import SegmentsError
from tasks.model.choose_k import STABLE, UNSTABLE, KCurve
from tasks.model.claims import TRUE_OF
from tasks.model.transform import SegmentModel
from tasks.report import charts
from tasks.report.read import read_latest_run, read_segment_sample, read_transitions
from tasks.settings import COMPUTED_FEATURES, SegmentSettings

REPORT_SAMPLE_SIZE = 5_000
TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows. ``sample`` holds clustered customers (``segment_id``,
    ``segment_name`` and the model's input columns); ``run`` the fields of the run record."""

    run: dict[str, Any]
    profiles: pd.DataFrame
    sample: pd.DataFrame
    model: SegmentModel
    elbow: KCurve | None
    elbow_source: str
    transitions: pd.DataFrame | None
    comparison: list[dict[str, Any]] | None


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    caption: str
    png: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


def report_elbow(
    run_elbow: dict[str, Any] | KCurve | None, training_elbow: dict[str, Any] | None
) -> tuple[KCurve | None, str]:
    """The elbow to show and a sentence saying whose: the run's own (automatic K), else the one of the
    run that trained the model it used, else none (K was fixed when the model was fitted)."""
    if run_elbow is not None:
        curve = KCurve.from_dict(run_elbow) if isinstance(run_elbow, dict) else run_elbow
        return curve, f"The run's own scores for each K. {curve.reason}."
    if training_elbow is not None:
        return KCurve.from_dict(training_elbow), "The elbow of the run that fitted this model (this run reused it)."
    return None, "No elbow: K was fixed when this model was fitted (--n-clusters), so none was computed."


def report_data_from_outputs(settings: SegmentSettings) -> ReportData:
    """The latest successful run as the output tables hold it: its record, profiles, model, a sample of
    its customers, the transitions view, and the stored comparison of algorithms."""
    latest = read_latest_run(settings)
    if latest.stored_model is None:
        raise SegmentsError(f"model version {latest.record.get('model_version')} of the latest run is not stored")
    model = latest.stored_model.model
    sample = read_segment_sample(settings, list(model.input_columns), REPORT_SAMPLE_SIZE)
    elbow, source = report_elbow(latest.record.get("elbow"), latest.training_elbow)
    return ReportData(
        run=latest.record | {"dry_run": False},
        profiles=latest.profiles,
        sample=sample,
        model=model,
        elbow=elbow,
        elbow_source=source,
        transitions=read_transitions(settings),
        comparison=latest.record.get("algorithm_comparison"),
    )


def report_data_from_run(
    run: dict[str, Any],
    assignments: pd.DataFrame,
    profiles: pd.DataFrame,
    model: SegmentModel,
    *,
    elbow: KCurve | None,
    comparison: list[dict[str, Any]] | None,
    random_state: int,
) -> ReportData:
    """Report data of a run held in memory (a dry run): no transitions, since nothing was written."""
    clustered = assignments.loc[assignments["segment_id"] != 0]
    sample = clustered.sample(n=min(REPORT_SAMPLE_SIZE, len(clustered)), random_state=random_state)
    curve, source = report_elbow(elbow, None)
    return ReportData(
        run=run,
        profiles=profiles,
        sample=sample.reset_index(drop=True),
        model=model,
        elbow=curve,
        elbow_source=source,
        transitions=None,
        comparison=comparison,
    )


def segment_order(profiles: pd.DataFrame) -> list[tuple[int, str]]:
    """(id, name) of the clustered segments in id order: the colour order of every chart."""
    clustered = profiles.loc[profiles["segment_id"] != 0].sort_values("segment_id")
    return [
        (int(segment_id), str(name))
        for segment_id, name in zip(clustered["segment_id"], clustered["segment_name"], strict=True)
    ]


def standardized_means(data: ReportData) -> pd.DataFrame:
    """Mean of each model feature per segment, in the model's standardized space (rows: segments)."""
    values = pd.DataFrame(data.model.transform(data.sample), columns=list(data.model.features))
    means = values.groupby(data.sample["segment_id"].to_numpy()).mean()
    order = segment_order(data.profiles)
    means = means.reindex([segment_id for segment_id, _ in order])
    means.index = [f"{segment_id} {name}" for segment_id, name in order]
    return means


def build_charts(data: ReportData) -> list[Chart]:
    """The report's charts, in reading order: elbow, silhouette by K, sizes, heatmap, pair plot, and
    transitions when there was an earlier run."""
    chosen = data.run.get("n_clusters")
    numeric_inputs = [name for name in data.model.input_columns if name not in data.model.categorical]
    built = []
    if data.elbow is not None:
        built += [
            Chart(
                "elbow",
                "Elbow curve",
                "Within-cluster sum of squares for each K on the standardized features; the dashed line marks "
                "the knee, shown for reference: K is chosen by how stable the segments are under resampling, "
                f"not by the knee. {data.elbow_source}",
                charts.elbow_chart(data.elbow, chosen),
            ),
            Chart(
                "silhouette",
                "Silhouette by K",
                "How well separated the segments are for each K (the chosen K highlighted). Silhouette alone "
                "tends to prefer K=2 on continuous RFM data, which marketing cannot use: K is the largest number "
                "of segments in the range that all stay stable under resampling (each at least 0.75), among "
                "those within 0.02 of the best silhouette; a refit keeps the previous K while its segments stay "
                "at 0.6 or more.",
                charts.silhouette_chart(data.elbow, chosen),
            ),
        ]
    built += [
        Chart(
            "sizes",
            "Segment sizes",
            "Customers in each segment, reserved segments included.",
            charts.sizes_chart(data.profiles),
        ),
        Chart(
            "heatmap",
            "Feature means per segment",
            "Mean of each clustering feature per segment after the model's transforms (log for money and "
            "counts, capped, standardized): red is above the average customer, blue below.",
            charts.heatmap_chart(standardized_means(data)),
        ),
    ]
    if numeric_inputs:
        built.append(
            Chart(
                "scatter",
                "Customers by segment",
                f"Each pair of clustering features for {len(data.sample):,} sampled customers, coloured by segment.",
                charts.pair_chart(data.sample, numeric_inputs, segment_order(data.profiles)),
            )
        )
    if data.transitions is not None:
        built.append(
            Chart(
                "transitions",
                "Transitions",
                "Customers by their segment on the previous as-of date (rows) and now (columns).",
                charts.transitions_chart(data.transitions),
            )
        )
    return built


def _metric(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:,.{digits}f}"


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:,.0f}" if abs(float(value)) >= 100 else f"{value:,.2f}"


def profile_features(profiles: pd.DataFrame) -> list[str]:
    """Features whose means the profile table shows: RFM features, then customer attributes."""
    names = [
        name for name in COMPUTED_FEATURES if f"mean_{name}" in profiles and profiles[f"mean_{name}"].notna().any()
    ]
    attributes = [
        column.removeprefix("mean_")
        for column in profiles.columns
        if column.startswith("mean_")
        and column.removeprefix("mean_") not in COMPUTED_FEATURES
        and not column.endswith("_score")
        and profiles[column].notna().any()
    ]
    return names + attributes


def render_html(data: ReportData, built: list[Chart], *, outputs: str) -> str:
    """The self-contained HTML page: no script, no external resource, images as data URIs."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    template = environment.get_template("report.html.j2")
    transitions = (
        data.transitions.sort_values("customers", ascending=False).to_dict(orient="records")
        if data.transitions is not None
        else None
    )
    run = dict(data.run)
    for key in (
        "silhouette",
        "davies_bouldin",
        "rows_scanned",
        "rows_rejected",
        "customers_clustered",
        "guest_rows",
        "guest_net_amount",
    ):
        run.setdefault(key, None)
    return template.render(
        run=run,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        profiles=data.profiles.sort_values("segment_id").to_dict(orient="records"),
        profile_features=profile_features(data.profiles),
        charts=built,
        transitions=transitions,
        transitions_from=None if data.transitions is None else data.transitions["from_as_of"].dropna().iloc[0],
        comparison=data.comparison,
        elbow_note=None if data.elbow is not None else data.elbow_source,
        metric=_metric,
        number=_number,
        percent=_percent,
        weak_purity=lambda purity: _known(purity) and purity < TRUE_OF,
        stability_flag=stability_flag,
        outputs=outputs,
    )


def stability_flag(stability: Any) -> str | None:
    """How a segment's stability reads in the report: "unstable" below 0.6, "fair" below 0.75."""
    if not _known(stability):
        return None
    return "unstable" if stability < UNSTABLE else "fair" if stability < STABLE else None


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _percent(value: Any) -> str:
    return f"{value:.0%}" if _known(value) else "-"


def render_markdown(data: ReportData, built: list[Chart]) -> str:
    """The same charts for the Prefect UI: a markdown artifact with the PNGs as data URIs."""
    lines = [f"# Segment report as of {data.run['as_of']}", ""]
    if data.elbow is None:
        lines += [data.elbow_source, ""]
    for chart in built:
        lines += [
            f"## {chart.title}",
            "",
            chart.caption,
            "",
            f"![{chart.title}](data:image/png;base64,{chart.base64})",
            "",
        ]
    if data.comparison:
        lines += [
            "## Alternative algorithms",
            "",
            "| algorithm | clusters | silhouette | Davies-Bouldin | sizes | noise share |",
            "|---|---:|---:|---:|---|---:|",
        ]
        lines += [
            f"| {row['algorithm']} | {row['clusters']} | {_metric(row['silhouette'])} | "
            f"{_metric(row['davies_bouldin'])} | {', '.join(map(str, row['sizes']))} | {row['noise_share']:.1%} |"
            for row in data.comparison
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RenderedReport:
    html: str
    markdown: str
    charts: list[Chart]


def render_report(data: ReportData, *, outputs: str) -> RenderedReport:
    """Draw the charts once and render both the HTML page and the markdown artifact from them."""
    built = build_charts(data)
    return RenderedReport(render_html(data, built, outputs=outputs), render_markdown(data, built), built)
