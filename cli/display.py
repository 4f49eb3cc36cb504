"""What `segments run` and `segments demo` show: the steps' progress while they run, then the
segments, K, the rows read and the report's path."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


STEP_TITLES = {"extract": "Extract", "model": "Model", "write": "Write", "report": "Report"}


@contextlib.contextmanager
def progress_display() -> Iterator[Callable[[str, str, str], None]]:
    """A rich progress display of the run's steps: a spinner and the elapsed time while a step runs,
    its rows and rows per second when it is done."""
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    tasks: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    ) as display:

        def listener(name: str, event: str, detail: str) -> None:
            title = STEP_TITLES.get(name, name)
            if event == "start":
                tasks[name] = display.add_task(title, total=None)
            elif name in tasks:
                outcome = detail if event == "done" else f"[red]failed[/] {detail}"
                display.update(tasks[name], description=f"{title}: {outcome}", total=1, completed=1)

        yield listener


def print_summary(summary: dict[str, Any]) -> None:
    # Read whole at 80 columns or in a pipe: names wrap onto a second line rather than being cut,
    # figures never wrap, and headers are short enough to leave the names room.
    table = Table(
        title=f"Segments as of {summary['as_of']} ({summary['customers']:,} customers)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("segment", overflow="fold", min_width=15)
    for title in ("customers", "share", "purity", "stable"):
        table.add_column(title, justify="right", no_wrap=True)
    segments = summary["segments"]
    attributes = [json.loads(segment.get("attribute_means") or "{}") for segment in segments]
    rfm = any(segment.get("mean_frequency") is not None for segment in segments if segment["segment_id"] != 0)
    rfm_columns = {  # the means of each segment
        "mean_recency_days": ("days", "{:.0f}"),
        "mean_frequency": ("orders", "{:.1f}"),
        "mean_monetary": ("spend", "{:,.2f}"),
    }
    attribute_names = [name for name in attributes[-1] if "=" not in name] if attributes and attributes[-1] else []
    for title, _ in rfm_columns.values() if rfm else ():
        table.add_column(title, justify="right", no_wrap=True)
    for name in attribute_names:
        table.add_column(f"mean {name}", justify="right", overflow="fold")
    for segment, means in zip(segments, attributes, strict=True):
        cells = [
            str(segment["segment_id"]),
            segment["segment_name"],
            f"{segment['customers']:,}",
            f"{segment['share']:.1%}",
            number(segment.get("purity"), "{:.0%}"),
            number(segment.get("stability"), "{:.2f}"),
        ]
        if rfm:
            cells += [number(segment.get(column), pattern) for column, (_, pattern) in rfm_columns.items()]
        cells += [number(means.get(name), "{:,.1f}") for name in attribute_names]
        table.add_row(*cells)
    console.print(table)
    if rfm:
        console.print(
            "purity: share of members the name is true of; stable: bootstrap Jaccard (>= 0.75 stable); days, "
            "orders, spend: the segment's means of recency, frequency and net spend.",
            highlight=False,
        )
    rejected = {reason: count for reason, count in summary["rejected_by_reason"].items() if count}
    guests = summary.get("guest_rows") or 0
    console.print(
        f"{summary['k_reason']}. Rows scanned: {summary['rows_scanned']:,}; guest checkouts: {guests:,} "
        f"({summary.get('guest_net_amount') or 0:,.2f} net, not segmented); rejected: {sum(rejected.values()):,} "
        f"{rejected or ''}".rstrip(),
        highlight=False,
        soft_wrap=True,
    )
    if summary.get("extract_mode") == "incremental":
        console.print(
            f"Incremental night: {summary['customers_recomputed']:,} of {summary['customers']:,} customers "
            f"recomputed from {summary['rows_scanned']:,} changed rows; the others carried from the last run.",
            highlight=False,
            soft_wrap=True,
        )
    elif summary.get("extract_reason"):
        corrected = summary.get("reconciliation_differences")
        fixed = f"; {corrected:,} customers differed from the nights' state" if corrected is not None else ""
        console.print(f"Full aggregation ({summary['extract_reason']}){fixed}.", highlight=False, soft_wrap=True)
    if summary.get("customers_moved") or summary.get("moved_by_refit") is not None:
        by_refit = summary.get("moved_by_refit")
        refit = f", {by_refit:,} of them only because the model was refitted" if by_refit is not None else ""
        console.print(
            f"Changed segment since the last run: {summary['customers_moved']:,} customers{refit}.",
            highlight=False,
            soft_wrap=True,
        )
    for note in summary.get("notes") or []:
        errors.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if summary.get("algorithm_comparison"):
        print_comparison(summary["algorithm_comparison"])
    if summary.get("report_path"):
        console.print(f"Report: {summary['report_path']}", highlight=False, soft_wrap=True)


def print_comparison(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"Algorithms on the same sample of {rows[0]['sample_rows']:,} customers")
    for column in ("algorithm", "clusters", "silhouette", "Davies-Bouldin", "sizes", "noise", "seconds"):
        table.add_column(column, justify="left" if column in ("algorithm", "sizes") else "right")
    for row in rows:
        table.add_row(
            row["algorithm"],
            str(row["clusters"]),
            number(row["silhouette"], "{:.3f}"),
            number(row["davies_bouldin"], "{:.3f}"),
            ", ".join(map(str, row["sizes"][:8])) + (" ..." if len(row["sizes"]) > 8 else ""),
            f"{row['noise_share']:.1%}",
            f"{row['seconds']:.2f}",
        )
    console.print(table)


def number(value: float | None, pattern: str) -> str:
    return "-" if value is None or value != value else pattern.format(value)  # None or NaN: no value
