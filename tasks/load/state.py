"""``customer_feature_state``: the per-customer running aggregates of runs with a change column
(:mod:`tasks.extract.incremental`), written in the run's write transaction, so that the state, the
watermark on the run record and the segments always belong to the same run."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.extract.features import CUSTOMER_ROW_COLUMNS
from tasks.extract.result import StateUpdate
from tasks.load.copy import copy_rows_into, records
from tasks.load.schema import OutputTables

#: below SQLite's limit of bound parameters per statement
SQLITE_IDS_PER_DELETE = 500


def write_state(conn: Connection, tables: OutputTables, update: StateUpdate) -> None:
    """Replace the whole state after a full aggregation; after an incremental night, replace the
    recomputed customers' rows (a customer with no usable row left loses its row)."""
    state = tables.table("customer_feature_state", dict.fromkeys(CUSTOMER_ROW_COLUMNS))
    postgres = conn.dialect.name == "postgresql"
    if update.recomputed_ids is None:  # a full aggregation
        conn.execute(sa.text(f"truncate table {tables.customer_feature_state}") if postgres else state.delete())
    elif postgres and update.recomputed_ids:
        conn.execute(
            state.delete().where(state.c.customer_id == sa.func.any(sa.bindparam("ids", update.recomputed_ids)))
        )
    else:
        for start in range(0, len(update.recomputed_ids), SQLITE_IDS_PER_DELETE):
            ids = update.recomputed_ids[start : start + SQLITE_IDS_PER_DELETE]
            conn.execute(state.delete().where(state.c.customer_id.in_(ids)))
    if not len(update.rows):
        return
    if postgres:
        copy_rows_into(conn, tables.schema_name, "customer_feature_state", CUSTOMER_ROW_COLUMNS, update.rows)
    else:
        rows = update.rows[CUSTOMER_ROW_COLUMNS].assign(monetary=pd.to_numeric(update.rows["monetary"]))
        conn.execute(state.insert(), records(rows, set()))
