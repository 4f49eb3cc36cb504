"""Run records (``segment_runs``): a run is recorded as ``running`` when it starts, ``failed`` with its
error, or ``succeeded`` by the write transaction with its counts, model decision and quality."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tasks.database import connection_errors, make_engine, scrub
from tasks.extract.result import ExtractResult
from tasks.load.schema import migrate_outputs, output_tables
from tasks.settings import SegmentSettings

if TYPE_CHECKING:  # the model step imports scikit-learn, which readers of run records do not need
    from tasks.model.step import ModelOutcome

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)

#: The columns of ``segment_runs`` the job writes, with their types for Core statements.
RUN_COLUMNS = {
    "run_id": sa.Text,
    "flow_run_id": sa.Text,
    "as_of": sa.Date,
    "started_at": TIMESTAMP,
    "finished_at": TIMESTAMP,
    "status": sa.Text,
    "model_action": sa.Text,
    "model_reason": sa.Text,
    "model_version": sa.Text,
    "n_clusters": sa.Integer,
    "k_reason": sa.Text,
    "rows_scanned": sa.BigInteger,
    "rows_in_window": sa.BigInteger,
    "rows_before_window": sa.BigInteger,
    "rows_rejected": sa.BigInteger,
    "rejected_by_reason": JSON,
    "customers": sa.BigInteger,
    "customers_clustered": sa.BigInteger,
    "customers_no_net_purchases": sa.BigInteger,
    "inertia": sa.Float,
    "silhouette": sa.Float,
    "davies_bouldin": sa.Float,
    "calinski_harabasz": sa.Float,
    "elbow": JSON,
    "drift": JSON,
    "segment_changes": JSON,
    "algorithm_comparison": JSON,
    "settings": JSON,
    "error": sa.Text,
    "guest_rows": sa.BigInteger,
    "guest_net_amount": sa.Float,
    "extract_mode": sa.Text,
    "extract_reason": sa.Text,
    "customers_recomputed": sa.BigInteger,
    "reconciliation_differences": sa.BigInteger,
    "watermark": sa.Text,
    "state_fingerprint": sa.Text,
    "customers_moved": sa.BigInteger,
    "moved_by_refit": sa.BigInteger,
    "report_error": sa.Text,
}


def start_run(
    settings: SegmentSettings, *, run_id: str, flow_run_id: str | None, as_of: date, started_at: datetime
) -> int:
    """Bring the output tables up to date (migrations) and record the run as ``running``, committed
    at once.

    Called while holding the output's run lock (:mod:`tasks.locking`), so any other run still marked
    ``running`` belongs to a process that died: those are marked ``failed`` as abandoned. Returns
    how many were.
    """
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.begin() as conn:
            migrate_outputs(conn, settings)
            runs = output_tables(conn, settings).table("segment_runs", RUN_COLUMNS)
            abandoned = conn.execute(
                runs.update()
                .where(runs.c.status == "running")
                .values(
                    status="failed",
                    finished_at=started_at,
                    error=f"abandoned: its process stopped before finishing (found by run {run_id})",
                )
            ).rowcount
            conn.execute(
                runs.insert().values(
                    run_id=run_id,
                    flow_run_id=flow_run_id,
                    as_of=as_of,
                    started_at=started_at,
                    status="running",
                    settings=settings.public_dict(),
                )
            )
    finally:
        engine.dispose()
    return int(abandoned)


def record_run_failure(settings: SegmentSettings, *, run_id: str, error: str) -> None:
    """Mark the run ``failed`` with its error message (password scrubbed), in its own transaction."""
    message = scrub(error, settings.database_url.get_secret_value())[:4000]
    _update_run(settings, run_id, status="failed", finished_at=datetime.now(UTC), error=message)


def record_report_error(settings: SegmentSettings, *, run_id: str, error: str) -> None:
    """Keep on a run whose outputs committed the error of its report or artifacts (password scrubbed);
    its status stays ``succeeded``: its rows are live."""
    _update_run(settings, run_id, report_error=scrub(error, settings.database_url.get_secret_value())[:4000])


def record_algorithm_comparison(settings: SegmentSettings, run_id: str, comparison: list[dict[str, Any]]) -> None:
    """Keep a comparison of algorithms (``segments compare``) on the run it was computed for."""
    _update_run(settings, run_id, algorithm_comparison=comparison)


def _update_run(settings: SegmentSettings, run_id: str, **values: Any) -> None:
    """Set ``values`` on the run's record, in a transaction of its own."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.begin() as conn:
            runs = output_tables(conn, settings).table("segment_runs", RUN_COLUMNS)
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))
    finally:
        engine.dispose()


def last_successful_run(settings: SegmentSettings) -> dict[str, Any] | None:
    """The last successful run's customers, rows scanned and rejected rows by reason; ``None`` before
    the first."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            tables = output_tables(conn, settings)
            if not sa.inspect(conn).has_table("segment_runs", schema=tables.schema_name):
                return None
            runs = tables.table("segment_runs", RUN_COLUMNS)
            row = (
                conn.execute(
                    sa.select(runs.c.customers, runs.c.rows_scanned, runs.c.rejected_by_reason)
                    .where(runs.c.status.in_(["succeeded", "superseded"]))
                    .order_by(runs.c.finished_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
    finally:
        engine.dispose()
    if row is None:
        return None
    rejected = row["rejected_by_reason"]
    return dict(row) | {"rejected_by_reason": json.loads(rejected) if isinstance(rejected, str) else rejected}


def run_record_fields(extract: ExtractResult, outcome: ModelOutcome) -> dict[str, Any]:
    """What ``segment_runs`` keeps about a successful run: counts, the model decision and its figures,
    K and how it was chosen, quality."""
    counts = extract.counts
    assignments = outcome.segments.assignments
    clustered = int((assignments["segment_id"] != 0).sum())
    return {
        "as_of": extract.as_of,
        "model_action": outcome.decision.action,
        "model_reason": outcome.decision.reason,
        "drift": outcome.decision.figures or None,
        "segment_changes": outcome.segment_changes,
        "model_version": str(outcome.model_version),
        "n_clusters": outcome.n_clusters,
        "k_reason": outcome.k_reason,
        "rows_scanned": counts.rows_scanned,
        "rows_in_window": counts.rows_in_window,
        "rows_before_window": counts.rows_before_window,
        "rows_rejected": counts.rows_rejected,
        "rejected_by_reason": counts.rejected_by_reason,
        "guest_rows": counts.guest_rows,
        "guest_net_amount": counts.guest_net_amount,
        **state_run_fields(extract),
        "customers": len(assignments),
        "customers_clustered": clustered,
        "customers_no_net_purchases": len(assignments) - clustered,
        "elbow": outcome.curve.as_dict() if outcome.curve else None,
        "algorithm_comparison": outcome.comparison,
        **outcome.metrics,
    }


def state_run_fields(extract: ExtractResult) -> dict[str, Any]:
    """How the run extracted (``full`` or ``incremental``, and why), how many customers it aggregated,
    what a full aggregation corrected, and the state's watermark; ``full`` alone without state."""
    state = extract.state
    if state is None:
        return {"extract_mode": "full", "customers_recomputed": len(extract.features)}
    return {
        "extract_mode": state.mode,
        "extract_reason": state.reason,
        "customers_recomputed": state.customers_recomputed,
        "reconciliation_differences": state.reconciliation_differences,
        "watermark": state.watermark,
        "state_fingerprint": state.fingerprint,
    }


def finished_run_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Run fields that exist in ``segment_runs``, for the update that closes a run; floats that are
    not finite become NULL."""
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in fields.items()
        if key in RUN_COLUMNS and key not in {"run_id", "status", "finished_at"}
    }
