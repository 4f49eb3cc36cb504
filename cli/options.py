"""The options the `segments` commands share, with their help texts (the same names as the flow's
parameters and the SEGMENTS_* settings)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

ISO_DATE = ["%Y-%m-%d"]

AsOf = Annotated[
    datetime | None,
    typer.Option(
        formats=ISO_DATE, help="Date to segment as of (YYYY-MM-DD); rows before it count. Default: today (UTC)."
    ),
]
NClusters = Annotated[
    int | None, typer.Option(min=2, max=30, help="Number of segments; omit to choose it automatically.")
]
KMin = Annotated[int | None, typer.Option(min=2, max=30, help="Smallest K the automatic choice may pick [default: 4].")]
KMax = Annotated[int | None, typer.Option(min=2, max=30, help="Largest K the automatic choice may pick [default: 8].")]


class Policy(StrEnum):
    auto = "auto"
    reuse = "reuse"
    refit = "refit"


ModelPolicy = Annotated[
    Policy | None,
    typer.Option(
        help="auto: reuse the stored model unless it is old or the data drifted; reuse: always; "
        "refit: always fit anew [default: auto]."
    ),
]
LookbackDays = Annotated[int | None, typer.Option(min=1, help="Only rows of the last N days before as-of count.")]
SampleSize = Annotated[
    int | None, typer.Option(min=100, help="Fit KMeans on at most this many customers [default: 200000].")
]
FullRefresh = Annotated[
    bool,
    typer.Option(
        "--full-refresh",
        help="Aggregate every row and count what the incremental nights got wrong (with a change column).",
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Compute and report, write nothing.")]
Force = Annotated[
    bool,
    typer.Option("--force", help="Run past the data gates (too many rejected rows, too many customers gone)."),
]
CompareAlgorithms = Annotated[
    bool,
    typer.Option(
        "--compare-algorithms",
        help="Also fit a Gaussian mixture, Ward clustering and DBSCAN beside KMeans and compare them in the report.",
    ),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="With a Prefect server (PREFECT_API_URL): show its log lines in the terminal too."
    ),
]
ReportOutput = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="HTML file to write [default: SEGMENTS_REPORT_PATH or segments_report.html]."),
]


class ExportFormatChoice(StrEnum):
    csv = "csv"
    parquet = "parquet"


class IfExists(StrEnum):
    FAIL = "fail"
    REPLACE = "replace"
    APPEND = "append"
