"""Data gates: before a run writes anything, its input is compared with expectations (the share of
rows rejected for quality, the customers against the last successful run)."""

from __future__ import annotations

from tasks.errors import DataGateError
from tasks.extract.result import ExtractResult, RowCounts
from tasks.load.runs import last_successful_customers
from tasks.settings import SegmentSettings

#: Reasons that say the source has bad rows. Rows at or after as-of are counted but not gated: every
#: backfill and every run that starts after midnight sales has them, and they are not wrong.
QUALITY_REASONS = ("null_customer_id", "null_occurred_at", "non_numeric_amount")


def check_input(
    counts: RowCounts,
    customers: int,
    previous_customers: int | None,
    *,
    max_rejected_share: float,
    max_customer_drop: float,
    force: bool,
) -> list[str]:
    """Raise :class:`DataGateError` when the input fails a gate, unless ``force``; return the gate
    messages that ``force`` let pass."""
    problems = []
    rejected = sum(counts.rejected_by_reason[reason] for reason in QUALITY_REASONS)
    share = rejected / counts.rows_scanned if counts.rows_scanned else 0.0
    if share > max_rejected_share:
        detail = ", ".join(f"{reason} {counts.rejected_by_reason[reason]:,}" for reason in QUALITY_REASONS)
        problems.append(
            f"{share:.1%} of {counts.rows_scanned:,} rows were rejected ({detail}), more than "
            f"max_rejected_share {max_rejected_share:.0%}"
        )
    if previous_customers and customers < previous_customers * (1 - max_customer_drop):
        drop = 1 - customers / previous_customers
        problems.append(
            f"{customers:,} customers against {previous_customers:,} in the last successful run, a drop of "
            f"{drop:.0%}, more than max_customer_drop {max_customer_drop:.0%}"
        )
    if problems and not force:
        raise DataGateError(
            "data gate: " + "; ".join(problems) + ". Nothing was written; fix the source, or run with --force"
        )
    return problems


def check_data_gates(settings: SegmentSettings, extract: ExtractResult) -> list[str]:
    """The gates of :func:`check_input` against the last successful run; returns what ``force`` let
    pass."""
    return check_input(
        extract.counts,
        len(extract.features),
        last_successful_customers(settings),
        max_rejected_share=settings.max_rejected_share,
        max_customer_drop=settings.max_customer_drop,
        force=settings.force,
    )
