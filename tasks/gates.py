"""Data gates before a run writes anything, and output checks before it commits.

Gates compare the input with expectations (rejected-row share, customer count against the last
successful run); checks state what the output must satisfy, the way dbt tests do (unique non-null ids,
every customer assigned, names of the model, counts that add up).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import DataGateError, OutputCheckError
from tasks.extract import RowCounts

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


@dataclass(frozen=True)
class OutputFigures:
    """Counts read back inside the write transaction, before commit."""

    customers_written: int
    null_customer_ids: int
    duplicate_customer_ids: int
    customers_without_segment: int
    rows_of_other_runs: int
    customers_in_profiles: int
    segment_names: frozenset[str]


def check_output(figures: OutputFigures, *, expected_customers: int, allowed_names: set[str]) -> None:
    """Raise :class:`OutputCheckError` listing every failed check."""
    failures = []
    if figures.null_customer_ids:
        failures.append(f"{figures.null_customer_ids} null customer ids")
    if figures.duplicate_customer_ids:
        failures.append(f"{figures.duplicate_customer_ids} duplicate customer ids")
    if figures.customers_without_segment:
        failures.append(f"{figures.customers_without_segment} customers without a segment")
    if figures.rows_of_other_runs:
        failures.append(f"{figures.rows_of_other_runs} rows of another run")
    if figures.customers_written != expected_customers:
        failures.append(f"{figures.customers_written:,} customers written, {expected_customers:,} in the run")
    if figures.customers_in_profiles != figures.customers_written:
        failures.append(
            f"profiles count {figures.customers_in_profiles:,} customers, assignments {figures.customers_written:,}"
        )
    unknown = sorted(figures.segment_names - allowed_names)
    if unknown:
        failures.append(f"segment names not in the model: {', '.join(unknown)}")
    if failures:
        raise OutputCheckError("output check failed, nothing committed: " + "; ".join(failures))
