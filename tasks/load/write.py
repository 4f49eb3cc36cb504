"""A run's outputs written in one transaction: assignments, history, a newly fitted model, the
per-customer state of incremental nights, the as-of date's profiles and the closed run record.
Readers (BI tools) see the previous state until it commits; a failure at any point rolls it all
back. Re-running an as-of date replaces that date's profiles and marks the earlier run
``superseded``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
import sqlalchemy as sa

from tasks.database import connection_errors, make_engine
from tasks.errors import LockTimeoutError
from tasks.extract.result import ExtractResult, StateUpdate
from tasks.load.assignments import SegmentMoves, reclaim_replaced_rows, replace_assignments
from tasks.load.checks import check_output, read_output_figures
from tasks.load.copy import records
from tasks.load.model_store import insert_model
from tasks.load.runs import JSON, RUN_COLUMNS, finished_run_values, run_record_fields
from tasks.load.schema import describe_outputs, output_tables
from tasks.load.state import write_state
from tasks.model.lifecycle import StoredModel
from tasks.model.segments import SegmentTable
from tasks.settings import SegmentSettings

if TYPE_CHECKING:
    from tasks.model.step import ModelOutcome

PROFILE_JSON_COLUMNS = {"centroid", "attribute_means"}


def write_run_outputs(
    settings: SegmentSettings,
    *,
    run_id: str,
    segments: SegmentTable,
    customer_id_is_integer: bool,
    run_fields: dict[str, Any],
    new_model: StoredModel | None = None,
    allowed_names: set[str] | None = None,
    state: StateUpdate | None = None,
    previous_model_segments: pd.Series | None = None,
) -> SegmentMoves:
    """Write the run's outputs in one transaction (see the module). On PostgreSQL the wait for a lock
    held by another session (an index build on ``customer_segments``; BI reads take none) is bounded by
    ``SEGMENTS_LOCK_TIMEOUT_SECONDS``; past it the write rolls back with :class:`LockTimeoutError`.

    Returns who moved (:class:`~tasks.load.assignments.SegmentMoves`, counted in the run record too)
    and whether the history was updated: it is not for an as-of date older than its latest change,
    since history is kept in date order. ``previous_model_segments``: see
    :func:`~tasks.load.assignments.replace_assignments`.
    """
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    as_of: date = run_fields["as_of"]
    try:
        with connection_errors(url), engine.begin() as conn:
            if settings.dialect == "postgresql":
                timeout = f"{round(settings.lock_timeout_seconds * 1000)}ms"
                conn.execute(sa.text("select set_config('lock_timeout', :timeout, true)"), {"timeout": timeout})
            tables = output_tables(conn, settings)
            moves = replace_assignments(
                conn,
                settings,
                tables,
                segments.assignments,
                customer_id_is_integer,
                as_of=as_of,
                run_id=run_id,
                previous_model_segments=previous_model_segments,
            )
            if new_model is not None:
                insert_model(conn, tables, new_model)
            if state is not None:
                write_state(conn, tables, state)
            kinds = {str(column): JSON if column in PROFILE_JSON_COLUMNS else None for column in segments.profiles}
            profiles = tables.table("segment_profiles", kinds | {"as_of": sa.Date})
            conn.execute(profiles.delete().where(profiles.c.as_of == as_of))
            if len(segments.profiles):
                conn.execute(profiles.insert(), records(segments.profiles, PROFILE_JSON_COLUMNS))
            check_output(
                read_output_figures(conn, tables, run_id),
                expected_customers=len(segments.assignments),
                allowed_names=allowed_names or set(segments.assignments["segment_name"]),
            )
            runs = tables.table("segment_runs", RUN_COLUMNS)
            conn.execute(
                runs.update()
                .where(runs.c.as_of == as_of, runs.c.status == "succeeded", runs.c.run_id != run_id)
                .values(status="superseded")
            )
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(
                    status="succeeded",
                    finished_at=datetime.now(UTC),
                    customers_moved=moves.customers_moved,
                    moved_by_refit=moves.moved_by_refit,
                    **finished_run_values(run_fields),
                )
            )
        if settings.dialect == "postgresql":
            reclaim_replaced_rows(engine, tables)
    except sa.exc.DBAPIError as error:
        if isinstance(error.orig, psycopg.errors.LockNotAvailable):
            raise LockTimeoutError(
                f"the write waited more than {settings.lock_timeout_seconds:g} s for a lock on an output table "
                f"({describe_outputs(settings)}) held by another session (an index build, an ALTER TABLE, or a "
                "session idle in a transaction that took such a lock: see pg_stat_activity); nothing was written. "
                "The flow retries; SEGMENTS_LOCK_TIMEOUT_SECONDS sets the wait"
            ) from None
        raise
    finally:
        engine.dispose()
    return moves


def write_run(settings: SegmentSettings, run_id: str, extract: ExtractResult, outcome: ModelOutcome) -> SegmentMoves:
    """The write step of a run: its extract's counts and its model's outcome, written by
    :func:`write_run_outputs`."""
    return write_run_outputs(
        settings,
        run_id=run_id,
        segments=outcome.segments,
        customer_id_is_integer=extract.customer_id_is_integer,
        run_fields=run_record_fields(extract, outcome),
        new_model=outcome.new_model,
        allowed_names=outcome.allowed_names,
        state=extract.state,
        previous_model_segments=(
            None
            if outcome.previous_model_segments is None
            else pd.Series(outcome.previous_model_segments, index=outcome.segments.assignments.index)
        ),
    )
