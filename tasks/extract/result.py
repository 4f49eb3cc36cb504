"""What the extract hands on: per-customer features and the row counts of the run record.

Plain data only (no database driver), so that the model, the gates and the report can take it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

import pandas as pd

#: Why a row with a customer id is not aggregated. Rows without one are guest checkouts: counted
#: apart (with their net amount), not rejected.
REJECTION_REASONS = (
    "null_occurred_at",
    "occurred_at_or_after_as_of",
    "non_numeric_amount",
)


@dataclass(frozen=True)
class RowCounts:
    """What the extract saw in the source, for the run record: every row scanned is a guest row, in
    the window, before it (lookback) or rejected for a reason."""

    rows_scanned: int
    rows_in_window: int
    rows_before_window: int
    rejected_by_reason: dict[str, int]
    guest_rows: int = 0
    guest_net_amount: float = 0.0

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_rejected": self.rows_rejected}


@dataclass(frozen=True)
class ExtractResult:
    """Per-customer features (one row per customer with rows in the window), the row counts, the
    as-of date, and whether customer ids are integers (the output's id column follows)."""

    features: pd.DataFrame
    counts: RowCounts
    as_of: date
    customer_id_is_integer: bool
    # runs with a change column: the per-customer state the write keeps for the next night
    state: StateUpdate | None = None


@dataclass(frozen=True)
class StateUpdate:
    """What a run with a change column hands the write for ``customer_feature_state`` and its run
    record: the customer rows to store (every customer after a full aggregation; the recomputed ones
    after an incremental night, whose earlier rows, ``recomputed_ids``, are replaced), the watermark
    the next night reads from, and what the run did."""

    mode: Literal["full", "incremental"]
    reason: str
    rows: pd.DataFrame
    recomputed_ids: list[Any] | None
    watermark: str | None
    fingerprint: str
    customers_recomputed: int
    # a full aggregation over valid state: customers whose stored state it corrected
    reconciliation_differences: int | None = None


def as_of_start(as_of: date) -> datetime:
    """``as_of`` 00:00 UTC: rows at or after this instant are not seen by the run."""
    return datetime.combine(as_of, time(0), tzinfo=UTC)


def epoch_microseconds(moment: datetime) -> int:
    """A midnight (or any whole second) as the epoch microseconds the feature query returns times in."""
    return int(moment.timestamp()) * 1_000_000


def default_as_of(now: datetime | None = None) -> date:
    """Today in UTC, so that a nightly run sees everything up to the end of yesterday."""
    return (now or datetime.now(UTC)).astimezone(UTC).date()
