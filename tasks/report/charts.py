"""Charts of a run, drawn with matplotlib's non-interactive Agg backend into PNG bytes.

Each function takes plain data (an elbow curve, profiles, a sample of customers) and returns one PNG.
Nothing here touches a screen, the database or Prefect, so the same charts go into the HTML report and
the Prefect markdown artifact.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import combinations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's first import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.model.choose_k import KCurve
from tasks.model.transform import LOG_TRANSFORMED

DPI = 96
PALETTE = plt.get_cmap("tab10")
MAX_PAIR_FEATURES = 4


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    figure = plt.figure(figsize=(width, height), dpi=DPI)
    try:
        yield figure
    finally:
        plt.close(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def segment_colour(position: int) -> tuple[float, float, float, float]:
    """The colour of the segment at ``position`` in the report's segment order (same in every chart)."""
    return PALETTE(position % PALETTE.N)


def elbow_chart(curve: KCurve, chosen_k: int | None) -> bytes:
    """Within-cluster sum of squares by K, with the knee and the chosen K marked."""
    with _figure(6.4, 3.6) as figure:
        axes = figure.add_subplot()
        axes.plot(curve.ks, curve.inertias, marker="o", color="#1f4e79")
        if curve.knee is not None:
            knee_inertia = curve.inertias[curve.ks.index(curve.knee)]
            axes.axvline(curve.knee, color="#c0392b", linestyle="--", linewidth=1)
            axes.annotate(
                f"knee K={curve.knee}",
                (curve.knee, knee_inertia),
                xytext=(12, 18),
                textcoords="offset points",
                color="#c0392b",
                arrowprops={"arrowstyle": "->", "color": "#c0392b"},
            )
        if chosen_k is not None and chosen_k in curve.ks and chosen_k != curve.knee:
            axes.plot([chosen_k], [curve.inertias[curve.ks.index(chosen_k)]], marker="s", color="#e67e22")
        axes.set_xticks(curve.ks)
        axes.set_xlabel("K (segments)")
        axes.set_ylabel("within-cluster sum of squares")
        axes.set_title("Elbow curve")
        axes.grid(alpha=0.3)
        return _png(figure)


def silhouette_chart(curve: KCurve, chosen_k: int | None) -> bytes:
    """Silhouette by K (bars, K >= 2; the chosen K highlighted) and, for the K of the range, the
    stability of its least stable segment (a line, with the 0.75 line of "stable")."""
    from tasks.model.choose_k import STABLE

    pairs = [(k, score) for k, score in zip(curve.ks, curve.silhouettes, strict=True) if score is not None]
    stable = [(k, value) for k, value in zip(curve.ks, curve.stabilities, strict=True) if value is not None]
    with _figure(6.4, 3.4) as figure:
        axes = figure.add_subplot()
        ks = [k for k, _ in pairs]
        colours = ["#e67e22" if k == chosen_k else "#5b8db8" for k in ks]
        axes.bar(ks, [score for _, score in pairs], color=colours, label="silhouette")
        if stable:
            axes.plot(
                [k for k, _ in stable],
                [value for _, value in stable],
                marker="o",
                color="#2e7d32",
                label="least stable segment",
            )
            axes.axhline(STABLE, color="#2e7d32", linestyle=":", linewidth=1)
            axes.legend(fontsize=8, loc="lower left")
        axes.set_xticks(ks)
        axes.set_ylim(0, 1.05)
        axes.set_xlabel("K (segments)")
        axes.set_title("Silhouette and stability by K (higher: better)")
        axes.grid(axis="y", alpha=0.3)
        return _png(figure)


def sizes_chart(profiles: pd.DataFrame) -> bytes:
    """Customers per segment as horizontal bars, labelled with count and share."""
    ordered = profiles.sort_values("segment_id")
    labels = [f"{row.segment_id} {row.segment_name}" for row in ordered.itertuples()]
    with _figure(6.4, 0.45 * len(ordered) + 1.2) as figure:
        axes = figure.add_subplot()
        positions = np.arange(len(ordered))
        colours, position = [], 0
        for segment_id in ordered["segment_id"]:
            if segment_id == 0:  # the reserved segment is not clustered: grey, not a segment colour
                colours.append((0.6, 0.6, 0.6, 1.0))
            else:
                colours.append(segment_colour(position))
                position += 1
        axes.barh(positions, ordered["customers"], color=colours)
        axes.set_yticks(positions, labels)
        axes.invert_yaxis()
        for position, (customers, share) in enumerate(zip(ordered["customers"], ordered["share"], strict=True)):
            axes.annotate(
                f" {int(customers):,} ({share:.1%})",
                (customers, position),
                va="center",
                fontsize=8,
                annotation_clip=False,
            )
        axes.set_xlabel("customers")
        axes.set_title("Segment sizes")
        axes.margins(x=0.25)
        return _png(figure)


def heatmap_chart(standardized_means: pd.DataFrame) -> bytes:
    """Standardized feature means (rows: segments, columns: features), diverging around zero."""
    values = standardized_means.to_numpy(dtype=np.float64)
    limit = max(float(np.nanmax(np.abs(values))) if values.size else 1.0, 0.5)
    with _figure(1.2 * len(standardized_means.columns) + 3.0, 0.5 * len(standardized_means) + 1.6) as figure:
        axes = figure.add_subplot()
        image = axes.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        axes.set_xticks(range(values.shape[1]), list(standardized_means.columns), rotation=30, ha="right")
        axes.set_yticks(range(values.shape[0]), list(standardized_means.index))
        for (row, column), value in np.ndenumerate(values):
            ink = "white" if abs(value) > 0.6 * limit else "black"
            axes.text(column, row, f"{value:+.2f}", ha="center", va="center", fontsize=8, color=ink)
        figure.colorbar(image, ax=axes, label="standard deviations from the mean")
        axes.set_title("Feature means per segment (standardized)")
        return _png(figure)


def pair_chart(sample: pd.DataFrame, features: list[str], segment_order: list[tuple[int, str]]) -> bytes:
    """Scatter plots of every pair of (at most four) numeric features, coloured by segment.

    Heavy-tailed features (money, counts) are drawn on a symmetric log axis, as the model sees them.
    """
    shown = features[:MAX_PAIR_FEATURES]
    pairs = list(combinations(shown, 2)) or [(shown[0], shown[0])]
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    with _figure(4.0 * columns, 3.6 * rows + 0.6) as figure:
        for index, (x_name, y_name) in enumerate(pairs):
            axes = figure.add_subplot(rows, columns, index + 1)
            for position, (segment_id, name) in enumerate(segment_order):
                members = sample.loc[sample["segment_id"] == segment_id]
                axes.scatter(
                    members[x_name].astype("float64"),
                    members[y_name].astype("float64"),
                    s=6,
                    alpha=0.6,
                    color=segment_colour(position),
                    label=f"{segment_id} {name}",
                )
            for name, set_scale in ((x_name, axes.set_xscale), (y_name, axes.set_yscale)):
                if name in LOG_TRANSFORMED:
                    set_scale("symlog", linthresh=1.0)
            axes.set_xlabel(x_name)
            axes.set_ylabel(y_name)
            axes.grid(alpha=0.3)
        handles, labels = figure.axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, markerscale=2)
        figure.suptitle(f"Customers by segment ({len(sample):,} sampled)")
        buffer = io.BytesIO()
        figure.tight_layout(rect=(0, 0.08 + 0.04 * (len(labels) > 4), 1, 1))
        figure.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()


def transitions_chart(transitions: pd.DataFrame) -> bytes:
    """Customers moving from each segment (rows) to each segment (columns) between the last two runs."""
    labels = transitions.assign(
        source=transitions["from_segment_name"].fillna("(new customer)"),
        target=transitions["to_segment_name"].fillna("(gone)"),
    )
    matrix = labels.pivot_table(index="source", columns="target", values="customers", aggfunc="sum", fill_value=0)
    with _figure(1.1 * len(matrix.columns) + 3.0, 0.5 * len(matrix) + 1.8) as figure:
        axes = figure.add_subplot()
        axes.imshow(matrix.to_numpy(dtype=np.float64), cmap="Blues", aspect="auto")
        axes.set_xticks(range(len(matrix.columns)), list(matrix.columns), rotation=30, ha="right")
        axes.set_yticks(range(len(matrix.index)), list(matrix.index))
        for (row, column), value in np.ndenumerate(matrix.to_numpy()):
            axes.text(column, row, f"{int(value):,}", ha="center", va="center", fontsize=8)
        axes.set_xlabel("segment now")
        axes.set_ylabel("segment before")
        axes.set_title("Transitions since the previous run")
        return _png(figure)
