"""Load: create the output tables, record runs, and write a run's outputs in one transaction.

Readers (BI tools) see the previous assignments until the write transaction commits; a failure at any
point rolls it back and leaves them untouched. Re-running the same as-of date replaces that date's
profiles and marks the earlier run ``superseded``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql as psql
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql

from tasks.database import (
    QuotedIdentifier,
    SqlKeyword,
    connection_errors,
    load_sql,
    make_engine,
    quote_identifier,
    quote_table,
    scrub,
    split_statements,
)
from tasks.errors import LockTimeoutError, SourceError
from tasks.gates import OutputFigures, check_output
from tasks.lifecycle import StoredModel
from tasks.model import MODEL_FORMAT_VERSION
from tasks.segments import SegmentTable
from tasks.settings import SegmentSettings, check_identifier, split_table_name

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIMESTAMP = sa.DateTime(timezone=True)

RUN_COLUMNS = {
    "run_id": sa.Text,
    "flow_run_id": sa.Text,
    "as_of": sa.Date,
    "started_at": _TIMESTAMP,
    "finished_at": _TIMESTAMP,
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
    "rejected_by_reason": _JSON,
    "customers": sa.BigInteger,
    "customers_clustered": sa.BigInteger,
    "customers_no_net_purchases": sa.BigInteger,
    "inertia": sa.Float,
    "silhouette": sa.Float,
    "davies_bouldin": sa.Float,
    "calinski_harabasz": sa.Float,
    "elbow": _JSON,
    "drift": _JSON,
    "segment_changes": _JSON,
    "algorithm_comparison": _JSON,
    "settings": _JSON,
    "error": sa.Text,
}
_PROFILE_JSON_COLUMNS = {"centroid", "attribute_means"}
# Column types of the output DDL per dialect: SQLite keeps times as ISO-8601 text and JSON as text.
_DDL_TYPES = {
    "postgresql": {
        "timestamp_type": "timestamptz",
        "json_type": "jsonb",
        "float_type": "double precision",
        "money_type": "numeric",
        "small_integer_type": "smallint",
    },
    "sqlite": {
        "timestamp_type": "timestamp",
        "json_type": "text",
        "float_type": "real",
        "money_type": "real",
        "small_integer_type": "integer",
    },
}


def _ddl_types(dialect: str) -> dict[str, SqlKeyword]:
    return {name: SqlKeyword(kind) for name, kind in _DDL_TYPES[dialect].items()}


_ASSIGNMENT_TYPES: dict[str, Any] = {
    "customer_id": None,
    "segment_id": sa.Integer,
    "segment_name": sa.Text,
    "recency_days": sa.Integer,
    "frequency": sa.Integer,
    "monetary": sa.Float,
    "avg_order_value": sa.Float,
    "tenure_days": sa.Integer,
    "r_score": sa.Integer,
    "f_score": sa.Integer,
    "m_score": sa.Integer,
    "as_of": sa.Date,
    "run_id": sa.Text,
    "model_version": sa.Text,
    "scored_at": _TIMESTAMP,
}


@dataclass(frozen=True)
class OutputTables:
    """Quoted names of the output tables in the configured schema (SQLite: the database file)."""

    schema: QuotedIdentifier | None
    segment_runs: QuotedIdentifier
    segment_profiles: QuotedIdentifier
    segment_models: QuotedIdentifier
    customer_segments: QuotedIdentifier
    customer_segment_history: QuotedIdentifier
    segment_transitions: QuotedIdentifier
    schema_name: str | None

    def table(self, name: str, columns: dict[str, Any]) -> sa.TableClause:
        """A lightweight Core table for DML; SQLAlchemy quotes its names again on compile."""
        return sa.table(name, *(sa.column(column, kind) for column, kind in columns.items()), schema=self.schema_name)


def output_tables(engine: Engine | Connection, settings: SegmentSettings) -> OutputTables:
    """Where the outputs go: ``output_schema`` on PostgreSQL, the database file on SQLite."""
    schema = settings.output_schema if settings.dialect == "postgresql" else None
    return OutputTables(
        schema=quote_identifier(engine, schema, "schema") if schema else None,
        segment_runs=quote_table(engine, "segment_runs", schema),
        segment_profiles=quote_table(engine, "segment_profiles", schema),
        segment_models=quote_table(engine, "segment_models", schema),
        customer_segments=quote_table(engine, "customer_segments", schema),
        customer_segment_history=quote_table(engine, "customer_segment_history", schema),
        segment_transitions=quote_table(engine, "segment_transitions", schema),
        schema_name=schema,
    )


def describe_outputs(settings: SegmentSettings) -> str:
    """Where the output tables live, without credentials."""
    where = f"schema {settings.output_schema!r} of " if settings.dialect == "postgresql" else ""
    return f"customer_segments, segment_profiles, segment_runs in {where}{settings.masked_database_url()}"


def _run_script(conn: Connection, script: str) -> None:
    for statement in split_statements(script):
        conn.exec_driver_sql(statement)


def ensure_run_tables(conn: Connection, settings: SegmentSettings) -> OutputTables:
    """Create the output schema, ``segment_runs`` and ``segment_profiles`` if missing."""
    tables = output_tables(conn, settings)
    # Only create a missing schema: PostgreSQL asks for CREATE on the database even for "create schema
    # if not exists" of an existing one, which a least-privilege job role does not have.
    missing_schema = tables.schema_name is not None and not sa.inspect(conn).has_schema(tables.schema_name)
    script = load_sql(
        "output_tables",
        schema=tables.schema if missing_schema else None,
        segment_runs=tables.segment_runs,
        segment_profiles=tables.segment_profiles,
        segment_models=tables.segment_models,
        **_ddl_types(settings.dialect),
    )
    _run_script(conn, script)
    _add_missing_columns(conn, tables, settings.dialect)
    return tables


# Columns added to a table after its first release, oldest first: tables created by an earlier release
# get them on the next run (``create table if not exists`` leaves an existing table as it is).
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "segment_runs": [("drift", "json_type"), ("segment_changes", "json_type"), ("algorithm_comparison", "json_type")],
    "segment_profiles": [("attribute_means", "json_type")],
}


def _add_missing_columns(conn: Connection, tables: OutputTables, dialect: str) -> None:
    inspector = sa.inspect(conn)
    types = _ddl_types(dialect)
    for table, columns in _ADDED_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table, schema=tables.schema_name)}
        for column, kind in columns:
            if column not in present:
                target = quote_table(conn, table, tables.schema_name)
                conn.exec_driver_sql(f"alter table {target} add column {quote_identifier(conn, column)} {types[kind]}")


def start_run(
    settings: SegmentSettings, *, run_id: str, flow_run_id: str | None, as_of: date, started_at: datetime
) -> int:
    """Create the run tables if needed and record the run as ``running`` (committed at once).

    Called while holding the output's run lock (:mod:`tasks.locking`), so any other run still marked
    ``running`` belongs to a process that died (killed, crashed, lost its machine): those are marked
    ``failed`` as abandoned. Returns how many were.
    """
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.begin() as conn:
            tables = ensure_run_tables(conn, settings)
            runs = tables.table("segment_runs", RUN_COLUMNS)
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
    url = settings.database_url.get_secret_value()
    message = scrub(error, url)[:4000]
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.begin() as conn:
            runs = output_tables(conn, settings).table("segment_runs", RUN_COLUMNS)
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(status="failed", finished_at=datetime.now(UTC), error=message)
            )
    finally:
        engine.dispose()


def write_run_outputs(
    settings: SegmentSettings,
    *,
    run_id: str,
    segments: SegmentTable,
    customer_id_is_integer: bool,
    run_fields: dict[str, Any],
    new_model: StoredModel | None = None,
    allowed_names: set[str] | None = None,
) -> bool:
    """Replace ``customer_segments``, update ``customer_segment_history``, store a newly fitted model,
    replace the as-of date's profiles and close the run record, all in one transaction. Until it
    commits, readers see the previous state; on any error nothing changes.

    Returns whether the history was updated: it is not for an as-of date older than its latest
    change, since history is kept in date order (a backfill still writes everything else).
    """
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    as_of: date = run_fields["as_of"]
    try:
        with connection_errors(url), engine.begin() as conn:
            if settings.dialect == "postgresql":
                # the history's anti-joins and the output checks hash or sort every customer: in memory
                # instead of in batches on disk (the server default of 4 MB is for many small queries)
                conn.execute(sa.text("select set_config('work_mem', :size, true)"), {"size": WRITE_WORK_MEM})
                # JIT-compiling the history statement cost 20 ms on a quiet night and 370 ms when half
                # the customers moved (its estimates then pass jit_optimize_above_cost); it runs once
                conn.execute(sa.text("select set_config('jit', 'off', true)"))
                # Index probes costed as on SSD, as in the extract (4 dates from spinning disks): closing
                # 4,000 movers' history rows took 56 ms by probes, but the planner hashed (134 ms) above
                # ~3,000 of them; at 1.1 it switches near where hashing really wins (~20,000 at 877k)
                conn.execute(sa.text("select set_config('random_page_cost', '1.1', true)"))
                # The swap and a history index rebuild need an exclusive lock: behind a long BI query
                # the write would wait without end, and every reader coming later would queue behind it
                timeout = f"{round(settings.lock_timeout_seconds * 1000)}ms"
                conn.execute(sa.text("select set_config('lock_timeout', :timeout, true)"), {"timeout": timeout})
            tables = ensure_run_tables(conn, settings)
            # a history created by this transaction (a first run) may be loaded frozen (COPY FREEZE)
            history_created = settings.dialect == "postgresql" and not sa.inspect(conn).has_table(
                "customer_segment_history", schema=tables.schema_name
            )
            _ensure_customer_segments(
                conn, settings, tables, customer_id_is_integer, _attribute_kinds(segments.assignments)
            )
            # the swapped-in table's primary key is built from these rows: no duplicate can be there
            key_built = settings.dialect == "postgresql" and not _has_dependent_views(conn, tables)
            if key_built:
                # a first run joins nothing with the new table (its history is sent whole): its
                # statistics are left to autovacuum, whose next round finds 877k new rows to analyze
                _swap_in_assignments(conn, settings, tables, segments.assignments, analyze=not history_created)
            elif settings.dialect == "postgresql" and _may_truncate(conn, tables):
                # A view of the user's reads the table, so it stays: emptied by TRUNCATE (a new, empty
                # file, rolled back with the transaction) and refilled frozen. Deleting every row left
                # them all dead for VACUUM, so the table and its key grew by a run's rows every night.
                conn.exec_driver_sql(f"truncate table {tables.customer_segments}")
                _insert_assignments(conn, settings, tables, segments.assignments, created_or_truncated_here=True)
            else:
                conn.execute(tables.table("customer_segments", {}).delete())
                _insert_assignments(conn, settings, tables, segments.assignments)
            history_updated = _update_history(
                conn, tables, as_of, segments.assignments, history_created=history_created
            )
            if new_model is not None:
                _insert_model(conn, tables, new_model)

            profiles = tables.table("segment_profiles", _profile_columns(segments.profiles))
            conn.execute(profiles.delete().where(profiles.c.as_of == as_of))
            if len(segments.profiles):
                conn.execute(profiles.insert(), _records(segments.profiles, _PROFILE_JSON_COLUMNS))

            check_output(
                _output_figures(conn, tables, run_id, check_duplicates=not key_built),
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
                .values(status="succeeded", finished_at=datetime.now(UTC), **_clean(run_fields))
            )
    except sa.exc.DBAPIError as error:
        if isinstance(error.orig, psycopg.errors.LockNotAvailable):
            raise LockTimeoutError(
                f"the write waited more than {settings.lock_timeout_seconds:g} s for a lock on an output table "
                f"({describe_outputs(settings)}) held by another session (a long query, or a session idle in a "
                "transaction: see pg_stat_activity); nothing was written. The flow retries; "
                "SEGMENTS_LOCK_TIMEOUT_SECONDS sets the wait"
            ) from None
        raise
    finally:
        engine.dispose()
    return history_updated


_NEXT_ASSIGNMENTS = "customer_segments__next"
WRITE_WORK_MEM = "64MB"
_TABLE_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"})


def _may_truncate(conn: Connection, tables: OutputTables) -> bool:
    """Whether the job may TRUNCATE ``customer_segments`` (its owner may; others need the privilege)."""
    return bool(
        conn.execute(
            sa.text("select has_table_privilege(cast(:table as regclass), 'TRUNCATE')"),
            {"table": str(tables.customer_segments)},
        ).scalar_one()
    )


def _has_dependent_views(conn: Connection, tables: OutputTables) -> bool:
    """Whether a view (a user's, for BI) reads ``customer_segments``: such a table cannot be swapped."""
    dependents = conn.execute(
        sa.text(
            "select count(*) from pg_depend as dependency "
            "join pg_rewrite as rule on rule.oid = dependency.objid "
            "where dependency.refobjid = cast(:table as regclass) and rule.ev_class <> dependency.refobjid"
        ),
        {"table": str(tables.customer_segments)},
    ).scalar_one()
    return bool(dependents)


def _swap_in_assignments(
    conn: Connection,
    settings: SegmentSettings,
    tables: OutputTables,
    assignments: pd.DataFrame,
    *,
    analyze: bool = True,
) -> None:
    """PostgreSQL: COPY the assignments into a new table created in this transaction, build its primary
    key, give it the old table's grants, and swap it in for ``customer_segments``.

    Loading a fresh table without an index and building the key once is far cheaper than deleting
    every row and inserting them again through the index (which also left the dead rows for vacuum).
    The new table is a normal, logged table: a crash before commit leaves the old one in place. The
    swap takes an exclusive lock on ``customer_segments`` for the rest of the transaction (a moment:
    everything heavy is done by then); readers wait for the commit instead of seeing half a table.
    """
    schema = tables.schema_name
    current = tables.customer_segments
    following = quote_table(conn, _NEXT_ASSIGNMENTS, schema)
    conn.exec_driver_sql(f"drop table if exists {following}")
    conn.exec_driver_sql(f"create table {following} (like {current} including defaults including constraints)")
    constants = _run_constants(assignments)
    if constants:
        _set_column_defaults(conn, schema, _NEXT_ASSIGNMENTS, constants)
    _insert_assignments(
        conn,
        settings,
        tables,
        assignments,
        into=_NEXT_ASSIGNMENTS,
        skip=set(constants),
        created_or_truncated_here=True,
    )
    if constants:
        conn.execute(sa.text(load_sql("drop_constant_column_defaults", table=following)))
    grants = conn.execute(
        sa.text(
            "select coalesce(grantee_role.rolname, 'public') as grantee, privilege.privilege_type "
            "from pg_class as relation cross join lateral aclexplode(relation.relacl) as privilege "
            "left join pg_roles as grantee_role on grantee_role.oid = privilege.grantee "
            "where relation.oid = cast(:table as regclass) and privilege.grantee <> relation.relowner"
        ),
        {"table": str(current)},
    ).all()
    for grantee, privilege in grants:
        if privilege in _TABLE_PRIVILEGES:
            role = "public" if grantee == "public" else quote_identifier(conn, grantee, "role")
            conn.exec_driver_sql(f"grant {privilege} on {following} to {role}")
    conn.exec_driver_sql(f"drop table {current}")
    conn.exec_driver_sql(
        f"alter table {following} add constraint {quote_identifier(conn, 'customer_segments_pkey')} "
        "primary key (customer_id)"
    )
    conn.exec_driver_sql(f"alter table {following} rename to {quote_identifier(conn, 'customer_segments')}")
    # A table created in this transaction has no statistics yet: without them the history update
    # below probed the key 877k times in a nested loop (3 s) instead of hashing (ANALYZE: ~0.2 s).
    if analyze:
        conn.exec_driver_sql(f"analyze {current}")


_RUN_CONSTANT_COLUMNS = ("as_of", "run_id", "model_version", "scored_at")


def _run_constants(assignments: pd.DataFrame) -> dict[str, Any]:
    """The run's one-value columns (as-of date, run id, model version, scoring time) and their value,
    or nothing when any of them varies or is missing (then COPY sends them like any other column)."""
    constants: dict[str, Any] = {}
    if assignments.empty or not set(_RUN_CONSTANT_COLUMNS) <= set(assignments.columns):
        return constants
    for name in _RUN_CONSTANT_COLUMNS:
        column = assignments[name]
        first = column.iloc[0]
        if first is None or pd.isna(first) or not bool((column == first).all()):
            return {}
        constants[name] = first.to_pydatetime() if isinstance(first, pd.Timestamp) else first
    return constants


def _set_column_defaults(conn: Connection, schema: str | None, table: str, defaults: dict[str, Any]) -> None:
    """Make each value the default of its column in the table about to be loaded, so that COPY sends
    only the per-customer columns (at 877k customers 116 MB -> 49 MB of CSV). The values are typed
    literals, quoted by psycopg (``sql.Literal``: DDL takes no bound parameters), so each default is a
    constant: a default read from a setting and cast per row cost 1.3 s of the COPY's 3.5 s.
    ``drop_constant_column_defaults.sql`` removes them once the rows are in."""
    for name in (schema, table, *defaults):
        if name is not None:
            check_identifier(name, "name")
    target = psql.Identifier(schema, table) if schema else psql.Identifier(table)
    changes = psql.SQL(", ").join(
        psql.SQL("alter column {} set default {}").format(psql.Identifier(name), psql.Literal(value))
        for name, value in defaults.items()
    )
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    with driver_connection.cursor() as cursor:
        cursor.execute(psql.SQL("alter table {} {}").format(target, changes))


def _output_figures(
    conn: Connection, tables: OutputTables, run_id: str, check_duplicates: bool = True
) -> OutputFigures:
    sql = load_sql(
        "output_checks",
        customer_segments=tables.customer_segments,
        segment_profiles=tables.segment_profiles,
        check_duplicates=check_duplicates,
    )
    row = conn.execute(sa.text(sql), {"run_id": run_id}).mappings().one()
    assignments = tables.table("customer_segments", {"segment_name": sa.Text})
    names = conn.execute(sa.select(assignments.c.segment_name).distinct()).scalars().all()
    return OutputFigures(**{key: int(value) for key, value in row.items()}, segment_names=frozenset(names))


def _read_output(settings: SegmentSettings, table: str, columns: dict[str, Any], query: Any) -> Any:
    """``query(table clause)`` run against an output table; ``None`` while the table does not exist."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            tables = output_tables(conn, settings)
            if not sa.inspect(conn).has_table(table, schema=tables.schema_name):
                return None
            return conn.execute(query(tables.table(table, columns))).first()
    finally:
        engine.dispose()


def last_successful_customers(settings: SegmentSettings) -> int | None:
    """Customers of the last successful run, or ``None`` before the first."""
    row = _read_output(
        settings,
        "segment_runs",
        RUN_COLUMNS,
        lambda runs: (
            sa.select(runs.c.customers)
            .where(runs.c.status.in_(["succeeded", "superseded"]))
            .order_by(runs.c.finished_at.desc())
            .limit(1)
        ),
    )
    return None if row is None or row.customers is None else int(row.customers)


def _update_history(
    conn: Connection, tables: OutputTables, as_of: date, assignments: pd.DataFrame, *, history_created: bool = False
) -> bool:
    history = tables.table("customer_segment_history", {"valid_from": sa.Date})
    latest = conn.execute(sa.select(sa.func.max(history.c.valid_from))).scalar_one()
    if latest is not None and str(latest) > as_of.isoformat():
        return False
    context = {"history": tables.customer_segment_history, "customer_segments": tables.customer_segments}

    def run_script(name: str, **flags: bool) -> None:
        for statement in split_statements(load_sql(name, conn.dialect.name, **context, **flags)):
            query = sa.text(statement)
            if ":as_of" in statement:
                query = query.bindparams(sa.bindparam("as_of", value=as_of, type_=sa.Date))
            conn.execute(query)

    if conn.dialect.name != "postgresql":
        run_script("customer_segment_history")
        return True
    # Statistics of the history may be a whole first run behind (autovacuum has not seen it yet); the
    # plans below rest on them. Finding the changes is a full join of all customers with all open rows
    # (merged: see the script). The other statements start from few rows on a quiet night: the
    # history's rows of the as-of date (a re-run's undo), the changes (analyzed below). For each such
    # row a nested loop probes an index, where a hash join read every customer: a quiet night's re-run
    # undid in 7 + 5 ms instead of 178 + 205 ms at 877k customers, and 1,194 movers were closed in
    # 19 ms instead of 114 ms (a hash join over the whole history, which grows every night). With
    # many rows the planner hashes. (All nested loops were once ruled out here, against an anti-join
    # that rescanned an empty history's new rows; no statement joins that way any more.)
    conn.exec_driver_sql(f"analyze {tables.customer_segment_history}")
    first_run = latest is None  # the history is empty
    if first_run:  # every customer is new: filled without indexes, built once afterwards
        rebuild = True
    else:
        run_script("customer_segment_history")  # undo an earlier run of the date, then find the changes
        changes = conn.exec_driver_sql(f"select count(*) from {_HISTORY_CHANGES}").scalar_one()
        conn.exec_driver_sql(f"analyze {_HISTORY_CHANGES}")
        history_rows = conn.execute(
            sa.text("select greatest(reltuples, 0) from pg_class where oid = cast(:table as regclass)"),
            {"table": str(tables.customer_segment_history)},
        ).scalar_one()
        rebuild = rebuild_history_indexes(changes, history_rows)
    with _indexes_rebuilt_after(conn, tables.customer_segment_history) if rebuild else contextlib.nullcontext():
        if first_run:
            _open_first_history(conn, tables, assignments, as_of, freeze=history_created)
        else:
            run_script("customer_segment_history_apply")
    if not first_run:
        conn.exec_driver_sql(f"drop table {_HISTORY_CHANGES}")
    return True


def _open_first_history(
    conn: Connection, tables: OutputTables, assignments: pd.DataFrame, as_of: date, *, freeze: bool
) -> None:
    """PostgreSQL, into an empty history: open a row for every customer of the run, sent with COPY.

    COPY writes whole pages at a time (one WAL record per page, where INSERT ... SELECT from the new
    ``customer_segments`` logged every row): at 877k customers 0.31-0.33 s instead of 0.65-0.83 s, and
    the four index builds after it took 0.64-0.68 s instead of 0.86-0.94 s. The as-of date and the run
    id are column defaults for the COPY, as for ``customer_segments``. A history created in this
    transaction is loaded frozen: the next night's change detection reads the open rows from the index
    alone, without visiting the heap (a history that already existed, empty, cannot be: COPY FREEZE
    needs a table created or truncated in the transaction).
    """
    if assignments.empty:
        return
    columns = ["customer_id", "segment_id", "segment_name"]
    defaults: dict[str, Any] = {"valid_from": as_of}
    run_ids = assignments["run_id"]
    if run_ids.notna().all() and bool((run_ids == run_ids.iloc[0]).all()):
        defaults["run_id"] = run_ids.iloc[0]
    else:  # not one run's rows (never from the pipeline): each row's own run id
        columns.append("run_id")
    _set_column_defaults(conn, tables.schema_name, "customer_segment_history", defaults)
    copy_rows_into(conn, tables.schema_name, "customer_segment_history", columns, assignments, freeze=freeze)
    conn.exec_driver_sql(
        load_sql(
            "drop_history_copy_defaults",
            history=tables.customer_segment_history,
            run_id_default="run_id" in defaults,
        )
    )


_HISTORY_CHANGES = "pg_temp.customer_segment_history_changes"
# At 877k customers, writing a change through the history's four indexes cost ~20 us per moved customer
# (an update and an insert; ~6.5 us without the indexes), and dropping them and building them again
# afterwards ~2.7 us per history row. Past this share of the history the rebuild is cheaper: a change
# of K, a refit that reshuffles (a first run, into an empty history, always rebuilds).
REBUILD_HISTORY_INDEXES_ABOVE = 0.2


def rebuild_history_indexes(changes: int, history_rows: float) -> bool:
    """Whether writing ``changes`` (customers who moved, left or are new) into a history of about
    ``history_rows`` rows is cheaper with its indexes dropped and built again afterwards."""
    return changes > 0 and changes > REBUILD_HISTORY_INDEXES_ABOVE * history_rows


@contextlib.contextmanager
def _indexes_rebuilt_after(conn: Connection, table: QuotedIdentifier) -> Iterator[None]:
    """PostgreSQL, inside the write transaction: drop the table's indexes and key, run the body, then
    create them again from their definitions as the catalog gives them (a failure rolls all back)."""
    indexes = conn.execute(
        sa.text(
            "select cast(cast(index_row.indexrelid as regclass) as text) as index_name, "
            "pg_get_indexdef(index_row.indexrelid) as index_definition, "
            "key_row.conname as constraint_name, pg_get_constraintdef(key_row.oid) as constraint_definition "
            "from pg_index as index_row "
            "left join pg_constraint as key_row "
            "on key_row.conindid = index_row.indexrelid and key_row.conrelid = index_row.indrelid "
            "where index_row.indrelid = cast(:table as regclass)"
        ),
        {"table": str(table)},
    ).all()
    # Through psycopg: names and definitions come from the catalog (index names as regclass text,
    # quoted by PostgreSQL; constraint names quoted here) and may hold any character, "%" included.
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    target = psql.SQL(str(table))  # validated and quoted by output_tables
    with driver_connection.cursor() as cursor:
        for index in indexes:
            if index.constraint_name:
                name = psql.Identifier(index.constraint_name)
                cursor.execute(psql.SQL("alter table {} drop constraint {}").format(target, name))
            else:
                cursor.execute(psql.SQL("drop index {}").format(psql.SQL(index.index_name)))
    yield
    with driver_connection.cursor() as cursor:
        for index in indexes:
            if index.constraint_name:
                name, definition = psql.Identifier(index.constraint_name), psql.SQL(index.constraint_definition)
                cursor.execute(psql.SQL("alter table {} add constraint {} {}").format(target, name, definition))
            else:
                cursor.execute(psql.SQL(index.index_definition))


MODEL_COLUMNS = {
    "model_version": sa.Integer,
    "created_at": _TIMESTAMP,
    "training_run_id": sa.Text,
    "trained_as_of": sa.Date,
    "format_version": sa.Integer,
    "n_clusters": sa.Integer,
    "features": sa.Text,
    "model": _JSON,
}


def _insert_model(conn: Connection, tables: OutputTables, stored: StoredModel) -> None:
    models = tables.table("segment_models", MODEL_COLUMNS)
    conn.execute(
        models.insert().values(
            model_version=stored.version,
            created_at=datetime.now(UTC),
            training_run_id=stored.training_run_id,
            trained_as_of=stored.trained_as_of,
            format_version=MODEL_FORMAT_VERSION,
            n_clusters=stored.model.n_clusters,
            features=",".join(stored.model.features),
            model=stored.to_dict(),
        )
    )


def record_algorithm_comparison(settings: SegmentSettings, run_id: str, comparison: list[dict[str, Any]]) -> None:
    """Keep a comparison of algorithms (``segments compare``) on the run it was computed for."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.begin() as conn:
            runs = ensure_run_tables(conn, settings).table("segment_runs", RUN_COLUMNS)
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(algorithm_comparison=comparison))
    finally:
        engine.dispose()


def load_latest_model(settings: SegmentSettings) -> StoredModel | None:
    """The newest model in ``segment_models``, rebuilt from its stored numbers; ``None`` when there is
    none. A row that cannot be read (unknown format, wrong shapes) raises :class:`ModelError`."""
    row = _read_output(
        settings,
        "segment_models",
        MODEL_COLUMNS,
        lambda models: (
            sa.select(models.c.model_version, models.c.model).order_by(models.c.model_version.desc()).limit(1)
        ),
    )
    if row is None:
        return None
    data = json.loads(row.model) if isinstance(row.model, str) else row.model
    return StoredModel.from_dict(data)


def _attribute_kinds(assignments: pd.DataFrame) -> dict[str, str]:
    """Customer-attribute columns of the assignments (after the fixed ones) and their DDL type."""
    return {
        column: ("float_type" if pd.api.types.is_numeric_dtype(assignments[column]) else "text")
        for column in assignments.columns
        if column not in _ASSIGNMENT_TYPES
    }


def _ensure_customer_segments(
    conn: Connection,
    settings: SegmentSettings,
    tables: OutputTables,
    customer_id_is_integer: bool,
    attribute_kinds: dict[str, str] | None = None,
) -> None:
    wanted = "bigint" if customer_id_is_integer else "text"
    existing = (
        sa.inspect(conn).get_columns("customer_segments", schema=tables.schema_name)
        if sa.inspect(conn).has_table("customer_segments", schema=tables.schema_name)
        else []
    )
    for column in existing:
        if column["name"] == "customer_id":
            is_integer = isinstance(column["type"], sa.Integer)
            if is_integer != customer_id_is_integer:
                raise SourceError(
                    f"customer_segments.customer_id holds {'integer' if is_integer else 'text'} ids but the "
                    f"source's {settings.customer_id_column!r} is {wanted}; drop or rename the old "
                    "customer_segments table, or use another SEGMENTS_OUTPUT_SCHEMA"
                )
    script = load_sql(
        "customer_segments_table",
        customer_segments=tables.customer_segments,
        customer_segment_history=tables.customer_segment_history,
        customer_id_type=SqlKeyword(wanted),
        postgresql=settings.dialect == "postgresql",
        previous_open_index=quote_table(conn, "customer_segment_history_open_idx", tables.schema_name),
        **_ddl_types(settings.dialect),
    )
    _run_script(conn, script)
    view = load_sql(
        "segment_transitions",
        segment_transitions=tables.segment_transitions,
        segment_runs=tables.segment_runs,
        history=tables.customer_segment_history,
        or_replace=settings.dialect == "postgresql",
    )
    conn.exec_driver_sql(view)
    _add_attribute_columns(conn, settings, tables, attribute_kinds or {})


def _add_attribute_columns(
    conn: Connection, settings: SegmentSettings, tables: OutputTables, attribute_kinds: dict[str, str]
) -> None:
    """Add a column to ``customer_segments`` for each customer attribute the model used, and let
    segmenting on attributes alone leave the transaction columns empty."""
    inspector = sa.inspect(conn)
    columns = {
        column["name"]: column for column in inspector.get_columns("customer_segments", schema=tables.schema_name)
    }
    types = _ddl_types(settings.dialect)
    for name, kind in attribute_kinds.items():
        if name not in columns:
            column_type = types[kind] if kind in types else SqlKeyword("text")
            conn.exec_driver_sql(
                f"alter table {tables.customer_segments} add column {quote_identifier(conn, name)} {column_type}"
            )
    required = [name for name in ("frequency", "monetary") if not columns[name]["nullable"]]
    if required and settings.attributes_only:
        if settings.dialect != "postgresql":
            raise SourceError(
                "customer_segments in this SQLite file was created for transaction segments (frequency and "
                "monetary required); segment attributes into another file (SEGMENTS_DATABASE_URL)"
            )
        for name in required:
            conn.exec_driver_sql(
                f"alter table {tables.customer_segments} alter column {quote_identifier(conn, name)} drop not null"
            )


def _insert_assignments(
    conn: Connection,
    settings: SegmentSettings,
    tables: OutputTables,
    assignments: pd.DataFrame,
    into: str = "customer_segments",
    skip: Collection[str] = (),
    created_or_truncated_here: bool = False,
) -> None:
    """Write the assignment rows into ``into`` (``customer_segments``, or the table about to replace
    it); the ``skip`` columns are left to the table's defaults (PostgreSQL). A table created or
    truncated in this transaction is written frozen (see :func:`copy_rows_into`)."""
    if assignments.empty:
        return
    columns = [column for column in assignments.columns if column not in skip]  # fixed columns, then attributes
    if settings.dialect == "postgresql":
        copy_rows_into(conn, tables.schema_name, into, columns, assignments, freeze=created_or_truncated_here)
        return
    table = tables.table(into, _ASSIGNMENT_TYPES | dict.fromkeys(columns[len(_ASSIGNMENT_TYPES) :]))
    conn.execute(table.insert(), _records(assignments[columns], set()))


COPY_BATCH_ROWS = 50_000


def copy_rows_into(
    conn: Connection, schema: str | None, table: str, columns: list[str], frame: pd.DataFrame, *, freeze: bool = False
) -> None:
    """Write ``frame`` with PostgreSQL ``COPY ... FROM STDIN`` on the transaction's own connection.

    ``freeze`` (only for a table created or truncated in this transaction) writes the rows frozen and their pages
    all-visible, as a VACUUM would leave them: the first reader after the commit does not rewrite
    every page to set hint bits (at 877k assignments its first full scan took 59 ms instead of 35 ms),
    and index-only scans on the key work at once. It cost the COPY nothing measurable (0.66-0.71 s
    either way). Other sessions cannot see the table before the commit, so no one sees rows early.

    Names are validated, then composed by psycopg's ``sql.Identifier``, which quotes them. The CSV
    payload is rendered by Arrow's multi-threaded writer (at 877k rows: 0.5 s, where pandas' to_csv
    took 11 s, most of it formatting timestamps): strings quoted, NULL as an unquoted empty field, which
    is what PostgreSQL's CSV format reads as NULL. It is rendered and sent in batches of
    :data:`COPY_BATCH_ROWS`, so the server parses one batch while the next is rendered, and the whole
    text never sits in memory at once.
    """
    for name in (schema, table, *columns):
        if name is not None:
            check_identifier(name, "name")
    target = psql.Identifier(schema, table) if schema else psql.Identifier(table)
    statement = psql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
        target,
        psql.SQL(", ").join(psql.Identifier(column) for column in columns),
        psql.SQL(", FREEZE") if freeze else psql.SQL(""),
    )
    payload = pa.Table.from_pandas(frame[columns], preserve_index=False)
    for index, field in enumerate(payload.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz and _is_constant(payload.column(index)):
            # Arrow formats zoned timestamps slowly (1.3 s for 877k rows); a run's scored_at is one value
            value = payload.column(index)[0].as_py().isoformat()
            payload = payload.set_column(index, field.name, pa.array([value] * len(payload), pa.string()))
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")

    def render(batch: pa.RecordBatch) -> memoryview:
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, options)
        return buffer.getbuffer()

    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    cursor = driver_connection.cursor()
    batches = payload.to_batches(max_chunksize=COPY_BATCH_ROWS)
    try:
        # The next batch is rendered on a thread while this one is sent: writing a batch waits for
        # the server to take it in, and rendering waits for nothing but the CPU (neither holds the GIL).
        with cursor, cursor.copy(statement) as copy, ThreadPoolExecutor(1, "copy-render") as renderer:
            rendering = renderer.submit(render, batches[0]) if batches else None
            for index in range(len(batches)):
                assert rendering is not None
                rendered = rendering.result()
                if index + 1 < len(batches):
                    rendering = renderer.submit(render, batches[index + 1])
                copy.write(rendered)
                del rendered
    except psycopg.Error as error:
        # Raise what SQLAlchemy raises for any other statement (IntegrityError, OperationalError, ...).
        raise sa.exc.DBAPIError.instance(statement.as_string(driver_connection), None, error, psycopg.Error) from error


def _is_constant(column: pa.ChunkedArray) -> bool:
    return len(column) > 0 and column.null_count == 0 and len(column.unique()) == 1


def _profile_columns(profiles: pd.DataFrame) -> dict[str, Any]:
    kinds = {column: (_JSON if column in _PROFILE_JSON_COLUMNS else None) for column in profiles.columns}
    return kinds | {"as_of": sa.Date}


def _records(frame: pd.DataFrame, json_columns: set[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [
        {str(key): value for key, value in record.items()}
        for record in frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    ]
    for record in records:
        for column, value in record.items():
            if isinstance(value, pd.Timestamp):
                record[column] = value.to_pydatetime()
        for column in json_columns:
            if isinstance(record.get(column), str):
                record[column] = json.loads(record[column])
    return records


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Run fields that exist in ``segment_runs``; floats that are not finite become NULL."""
    return {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in fields.items()
        if key in RUN_COLUMNS and key not in {"run_id", "status", "finished_at"}
    }


def render_grants(settings: SegmentSettings, *, job_role: str, bi_role: str) -> str:
    """``sql/grants.sql`` for the configured source table and output schema and the given roles."""
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        source_schema, _ = split_table_name(settings.source_table)
        return load_sql(
            "grants",
            source_schema=quote_identifier(engine, source_schema or "public", "schema"),
            source_table=quote_table(engine, settings.source_table),
            output_schema=quote_identifier(engine, settings.output_schema, "schema"),
            job_role=quote_identifier(engine, job_role, "role"),
            bi_role=quote_identifier(engine, bi_role, "role"),
        )
    finally:
        engine.dispose()
