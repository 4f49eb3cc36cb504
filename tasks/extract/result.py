"""What the extract hands on: per-customer features and the row counts of the run record.

Plain data only (no database driver), so that the model, the gates and the report can take it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Any

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


def as_of_start(as_of: date) -> datetime:
    """``as_of`` 00:00 UTC: rows at or after this instant are not seen by the run."""
    return datetime.combine(as_of, time(0), tzinfo=UTC)


def default_as_of(now: datetime | None = None) -> date:
    """Today in UTC, so that a nightly run sees everything up to the end of yesterday."""
    return (now or datetime.now(UTC)).astimezone(UTC).date()
