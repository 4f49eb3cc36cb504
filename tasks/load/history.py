"""``customer_segment_history``: each customer's segment over time, a row only when it changes, kept
in line with ``customer_segments`` by set-based statements inside the run's write transaction."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy import Connection

from tasks.database import QuotedIdentifier, load_sql, split_statements
from tasks.load.schema import OutputTables


def update_history(conn: Connection, tables: OutputTables, as_of: date, current: QuotedIdentifier) -> bool:
    """Close the rows of customers who moved or left and open rows for those who moved or are new, as
    of ``as_of``, against the run's rows in ``current`` (``sql/customer_segment_history.<dialect>.sql``).
    Returns ``False``, changing nothing, for an as-of date older than the history's latest change:
    history is kept in date order (a backfill still writes everything else)."""
    history = tables.table("customer_segment_history", {"valid_from": sa.Date})
    latest = conn.execute(sa.select(sa.func.max(history.c.valid_from))).scalar_one()
    if latest is not None and str(latest) > as_of.isoformat():
        return False
    script = load_sql(
        "customer_segment_history",
        conn.dialect.name,
        history=tables.customer_segment_history,
        customer_segments=current,
    )
    for statement in split_statements(script):
        query = sa.text(statement)
        if ":as_of" in statement:
            query = query.bindparams(sa.bindparam("as_of", value=as_of, type_=sa.Date))
        conn.execute(query)
    return True
