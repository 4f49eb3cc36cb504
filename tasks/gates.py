"""Data gates: before a run writes anything, its input is compared with the last successful run's. A
run stops when the share of rows rejected for quality jumped (more than doubled, and up by more than
``SEGMENTS_MAX_REJECTED_SHARE_RISE``), or its customers fell by more than
``SEGMENTS_MAX_CUSTOMER_DROP``. Guest checkouts (rows without a customer id) are no quality problem,
and neither are rows dated at or after as-of: every backfill and every run after midnight sales has
them. A first run has nothing to compare with, and no gate."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import DataGateError
from tasks.extract.result import ExtractResult, RowCounts
from tasks.load.runs import last_successful_run
from tasks.settings import SegmentSettings, env_var

#: Reasons that say the source has bad rows.
QUALITY_REASONS = ("null_occurred_at", "non_numeric_amount")


@dataclass(frozen=True)
class PreviousRun:
    """What the gates compare with: the last successful run's customers and quality rejects."""

    customers: int
    rows_scanned: int
    quality_rejects: int

    @property
    def rejected_share(self) -> float:
        return self.quality_rejects / self.rows_scanned if self.rows_scanned else 0.0


def quality_rejects(rejected_by_reason: dict[str, int]) -> int:
    return sum(int(rejected_by_reason.get(reason) or 0) for reason in QUALITY_REASONS)


def check_input(
    counts: RowCounts,
    customers: int,
    previous: PreviousRun | None,
    *,
    max_rejected_share_rise: float,
    max_customer_drop: float,
    force: bool,
) -> list[str]:
    """Raise :class:`DataGateError` (one line: the figure and the setting) when the input fails a gate,
    unless ``force``; return the gate messages that ``force`` let pass."""
    if previous is None:
        return []
    problems = []
    rejected = quality_rejects(counts.rejected_by_reason)
    share = rejected / counts.rows_scanned if counts.rows_scanned else 0.0
    before = previous.rejected_share
    if share > 2 * before and share - before > max_rejected_share_rise:
        detail = ", ".join(f"{reason} {counts.rejected_by_reason.get(reason, 0):,}" for reason in QUALITY_REASONS)
        problems.append(
            f"{share:.1%} of {counts.rows_scanned:,} rows were rejected for quality ({detail}), up from {before:.1%} "
            f"in the last successful run: more than doubled and up by more than "
            f"{env_var('max_rejected_share_rise')} ({max_rejected_share_rise:.0%} points)"
        )
    if previous.customers and customers < previous.customers * (1 - max_customer_drop):
        drop = 1 - customers / previous.customers
        problems.append(
            f"{customers:,} customers against {previous.customers:,} in the last successful run, a drop of "
            f"{drop:.0%}, more than {env_var('max_customer_drop')} ({max_customer_drop:.0%})"
        )
    if problems and not force:
        raise DataGateError(
            "data gate: " + "; ".join(problems) + ". Nothing was written; fix the source, or run with --force"
        )
    return problems


def check_data_gates(settings: SegmentSettings, extract: ExtractResult) -> list[str]:
    """The gates of :func:`check_input` against the last successful run; returns what ``force`` let
    pass."""
    record = last_successful_run(settings)
    previous = None
    if record is not None:
        previous = PreviousRun(
            customers=int(record["customers"] or 0),
            rows_scanned=int(record["rows_scanned"] or 0),
            quality_rejects=quality_rejects(record["rejected_by_reason"] or {}),
        )
    return check_input(
        extract.counts,
        len(extract.features),
        previous,
        max_rejected_share_rise=settings.max_rejected_share_rise,
        max_customer_drop=settings.max_customer_drop,
        force=settings.force,
    )
