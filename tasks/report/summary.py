"""What a run reports to people in the Prefect UI: the markdown run summary and the profile table of
its artifacts. Charts are drawn with Unicode blocks, so they render wherever markdown does (the
Prefect UI, a terminal, a chat message) without images."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tasks.extract.result import ExtractResult
from tasks.load.schema import describe_outputs
from tasks.model.step import ModelOutcome
from tasks.settings import SegmentSettings

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
                "purity": _round(profile.get("purity"), 2),
                "stability": _round(profile.get("stability"), 2),
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
        f"| guest checkouts (no customer id; {counts.guest_net_amount:,.2f} net) | {counts.guest_rows:,} |",
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
    if outcome.curve is not None:
        curve = outcome.curve
        lines += [
            "",
            "## Choosing K",
            "",
            curve.reason + ".",
            "",
            "| K | within-cluster sum of squares | | silhouette | least stable segment |",
            "|---:|---:|---|---:|---:|",
        ]
        for k, inertia, silhouette, stability in zip(
            curve.ks, curve.inertias, curve.silhouettes, curve.stabilities, strict=True
        ):
            marker = " ← knee" if k == curve.knee else ""
            chosen = " **chosen**" if k == outcome.n_clusters else ""
            chart = f"`{bar(inertia, curve.inertias[0])}`{marker}{chosen}"
            lines.append(f"| {k} | {inertia:,.1f} | {chart} | {_metric(silhouette)} | {_metric(stability, 2)} |")
    lines += ["", "## Outputs", "", describe_outputs(settings) + "."]
    return "\n".join(lines) + "\n"


def _round(value: Any, digits: int) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _metric(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"
