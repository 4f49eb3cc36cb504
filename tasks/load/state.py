"""``customer_feature_state``: the per-customer running aggregates of runs with a change column
(:mod:`tasks.extract.incremental`), written in the run's write transaction, so that the state, the
watermark on the run record and the segments always belong to the same run."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.extract.features import CUSTOMER_ROW_COLUMNS
from tasks.extract.result import StateUpdate
from tasks.load.copy import copy_rows_into
from tasks.load.schema import OutputTables


def write_state(conn: Connection, tables: OutputTables, update: StateUpdate) -> None:
    """Replace the whole state after a full aggregation; after an incremental night, replace the
    recomputed customers' rows (a customer with no usable row left loses its row)."""
    if update.recomputed_ids is None:  # a full aggregation
        conn.exec_driver_sql(f"truncate table {tables.customer_feature_state}")
    elif update.recomputed_ids:
        state = tables.table("customer_feature_state", {"customer_id": None})
        conn.execute(
            state.delete().where(state.c.customer_id == sa.func.any(sa.bindparam("ids", update.recomputed_ids)))
        )
    if len(update.rows):
        copy_rows_into(conn, tables.schema_name, "customer_feature_state", CUSTOMER_ROW_COLUMNS, update.rows)
