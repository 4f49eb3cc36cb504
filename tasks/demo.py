"""The demo's data: synthetic transactions written to a fresh SQLite file."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import sqlalchemy as sa

from tasks.database import make_engine
from tasks.synthetic import generate_transactions


def load_demo_transactions(path: Path, *, customers: int, as_of: date, seed: int) -> int:
    """(Re)create the ``transactions`` table in the SQLite file ``path`` with synthetic rows.

    Returns the number of rows written. Output tables from an earlier demo stay and are replaced by
    the next run, as in production.
    """
    frame = generate_transactions(customers, as_of, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            frame.to_sql(
                "transactions",
                conn,
                if_exists="replace",
                index=False,
                chunksize=10_000,
                dtype={
                    "customer_id": sa.Text(),
                    "order_id": sa.Text(),
                    "occurred_at": sa.DateTime(),
                    "amount": sa.Numeric(12, 2),
                },
            )
    finally:
        engine.dispose()
    return len(frame)


ENV_MARK = "# Written by `segments demo`"


def point_env_file_at(database: Path, folder: Path) -> bool:
    """Write ``folder/.env`` so that every `segments` command run there reads the demo's database and
    its column mapping. An ``.env`` of the user's own (not written by the demo) is left as it is;
    returns whether the file now points at the demo."""
    env_file = folder / ".env"
    if env_file.exists() and not env_file.read_text().startswith(ENV_MARK):
        return False
    env_file.write_text(
        f"{ENV_MARK}: the demo's database and column mapping, read by every `segments` command run\n"
        "# from this folder. Delete this file (or set SEGMENTS_DATABASE_URL) to run on your own data.\n"
        f"SEGMENTS_DATABASE_URL=sqlite:///{database}\n"
        "SEGMENTS_ORDER_ID_COLUMN=order_id\n"
    )
    return True
