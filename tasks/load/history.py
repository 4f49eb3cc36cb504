"""``customer_segment_history``: each customer's segment over time, a row only when it changes, kept
in line with ``customer_segments`` inside the run's write transaction.

The run compares its rows with the rows it replaces in ``customer_segments`` (which the history
follows): a customer who moved or left gets their open row closed as of the run's date, one who moved
or is new gets a row opened. The same comparison gives each customer's previous segment and the date
they entered the current one, so ``customer_segments`` is written once, without a second join.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.database import load_sql
from tasks.load.copy import copy_rows_into, records
from tasks.load.schema import OutputTables

#: What a customer's row of ``customer_segments`` says about their past, besides the segment itself.
ENTRY_COLUMNS = ["previous_segment_id", "previous_segment_name", "segment_since"]
#: The columns of the rows being replaced that the comparison reads.
REPLACED_COLUMNS = ["customer_id", "segment_id", "segment_name", *ENTRY_COLUMNS, "as_of"]
HISTORY_COLUMNS = {
    "customer_id": None,
    "segment_id": sa.Integer,
    "segment_name": sa.Text,
    "valid_from": sa.Date,
    "valid_to": sa.Date,
    "run_id": sa.Text,
}


@dataclass(frozen=True)
class HistoryUpdate:
    """Per current customer, in the run's order: ``ENTRY_COLUMNS`` (their previous segment and the date
    they entered this one) and ``moved_from``, the segment id they left tonight (NA unless they moved)."""

    entry: pd.DataFrame
    moved_from: pd.Series


def update_history(
    conn: Connection, tables: OutputTables, as_of: date, run_id: str, replaced: pd.DataFrame, current: pd.DataFrame
) -> HistoryUpdate | None:
    """Close the open rows of customers who moved or left and open rows for those who moved or are
    new, as of ``as_of``, from the rows ``replaced`` (``REPLACED_COLUMNS``) and the run's ``current``
    rows (customer id, segment id and name). Returns what each current customer's row says of their
    past, and who moved, in the order of ``current``.

    A re-run of a date first undoes what the earlier run of that date did to the history. Returns
    ``None``, changing nothing, for an as-of date older than the history's latest change: history is
    kept in date order (a backfill still writes everything else, without the entry columns).
    """
    history = tables.table("customer_segment_history", HISTORY_COLUMNS)
    latest = conn.execute(sa.select(sa.func.max(history.c.valid_from))).scalar_one()
    latest = None if latest is None else date.fromisoformat(str(latest))
    if latest is not None and latest > as_of:
        return None
    undone = _undo_run_of_date(conn, history, as_of)
    # Rows written by a backfill run do not follow the history; after an undo, some rows don't either.
    out_of_line = latest is not None and bool((replaced["as_of"] < pd.Timestamp(latest)).any())
    before = _open_rows(conn, tables) if undone or out_of_line else replaced
    before = before.astype({"customer_id": current["customer_id"].dtype})

    merged = current[["customer_id", "segment_id", "segment_name"]].merge(
        before[["customer_id", "segment_id", "segment_name", *ENTRY_COLUMNS]],
        on="customer_id",
        how="left",
        suffixes=("", "_before"),
        validate="many_to_one",
    )
    known = merged["segment_id_before"].notna()
    moved = known & (merged["segment_id"] != merged["segment_id_before"])
    entered = moved | ~known
    # a merge, not isin: isin on Arrow-backed strings goes through a Python list
    still = before[["customer_id"]].merge(current[["customer_id"]], how="left", indicator=True)
    gone = still.loc[still["_merge"] == "left_only", "customer_id"]
    _close_open_rows(conn, history, pd.concat([merged.loc[moved, "customer_id"], gone]).tolist(), as_of)
    opened = merged.loc[entered, ["customer_id", "segment_id", "segment_name"]].assign(
        valid_from=as_of, valid_to=None, run_id=run_id
    )
    _insert_rows(conn, tables, history, opened)

    since = pd.to_datetime(merged["segment_since"]).dt.date.astype(object).where(~entered, as_of)
    entry = pd.DataFrame(
        {
            "previous_segment_id": merged["segment_id_before"]
            .where(moved, merged["previous_segment_id"])
            .astype("Int64"),
            "previous_segment_name": merged["segment_name_before"].where(moved, merged["previous_segment_name"]),
            "segment_since": since.where(since.notna(), None),
        },
        index=current.index,
    )
    moved_from = merged["segment_id_before"].where(moved).astype("Int64").set_axis(current.index)
    return HistoryUpdate(entry, moved_from)


def _undo_run_of_date(conn: Connection, history: sa.TableClause, as_of: date) -> bool:
    """Delete the rows an earlier run of ``as_of`` opened and reopen the rows it closed; returns
    whether there were any."""
    deleted = conn.execute(history.delete().where(history.c.valid_from == as_of))
    open_rows = history.alias("open_rows")
    reopened = conn.execute(
        history.update()
        .where(
            history.c.valid_to == as_of,
            ~sa.exists().where(open_rows.c.customer_id == history.c.customer_id, open_rows.c.valid_to.is_(None)),
        )
        .values(valid_to=None)
    )
    return deleted.rowcount > 0 or reopened.rowcount > 0


def _open_rows(conn: Connection, tables: OutputTables) -> pd.DataFrame:
    """Every customer's open history row, as the rows of ``customer_segments`` would hold it."""
    sql = load_sql("customer_segment_history_open_rows", history=tables.customer_segment_history)
    rows = conn.execute(sa.text(sql)).mappings().all()
    return pd.DataFrame(rows, columns=REPLACED_COLUMNS[:-1])


def _close_open_rows(conn: Connection, history: sa.TableClause, ids: list[Any], as_of: date) -> None:
    if not ids:
        return
    close = history.update().where(history.c.valid_to.is_(None)).values(valid_to=as_of)
    if conn.dialect.name == "postgresql":  # one statement for every id
        conn.execute(close.where(history.c.customer_id == sa.func.any(sa.bindparam("ids", ids))))
    else:
        conn.execute(close.where(history.c.customer_id == sa.bindparam("id")), [{"id": id_} for id_ in ids])


def _insert_rows(conn: Connection, tables: OutputTables, history: sa.TableClause, rows: pd.DataFrame) -> None:
    if not len(rows):
        return
    if conn.dialect.name == "postgresql":
        copy_rows_into(conn, tables.schema_name, "customer_segment_history", list(rows.columns), rows)
    else:
        conn.execute(history.insert(), records(rows, set()))
