"""Twenty consecutive runs on changing data: no leaked connections, flat memory, history consistent."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.pipeline import run_pipeline
from tasks.settings import load_settings
from tests.conftest import Backend
from tests.sql.test_load import AS_OF, load_synthetic

pytestmark = pytest.mark.soak
RUNS = 20


def resident_megabytes() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def our_connections(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("select count(*) from pg_stat_activity where application_name = 'customer-segments'")
            ).scalar_one()
        )


def add_a_day_of_orders(backend: Backend, day: pd.Timestamp, rng: np.random.Generator, new_customers: int) -> None:
    existing = [f"C{n:06d}" for n in rng.choice(600, 40, replace=False)]
    fresh = [f"N{day:%m%d}{n:03d}" for n in range(new_customers)]
    rows = pd.DataFrame(
        {
            "customer_id": existing + fresh,
            "order_id": [f"D{day:%Y%m%d}-{n}" for n in range(len(existing) + len(fresh))],
            "occurred_at": [day.to_pydatetime()] * (len(existing) + len(fresh)),
            "amount": rng.uniform(5, 300, len(existing) + len(fresh)).round(2),
        }
    )
    rows.to_sql("transactions", backend.engine(), schema=backend.schema, index=False, if_exists="append")


def test_twenty_runs_on_changing_data(postgres_url: str, pg_schema: str) -> None:
    backend = Backend("postgresql", postgres_url, pg_schema)
    load_synthetic(backend, customers=600)
    settings = load_settings(**backend.settings(order_id_column="order_id"))
    rng = np.random.default_rng(0)
    connections_before = our_connections(backend.engine())
    memory = []
    actions = []

    for day in range(RUNS):
        as_of = AS_OF + timedelta(days=day)
        add_a_day_of_orders(backend, pd.Timestamp(as_of) - pd.Timedelta(hours=3), rng, new_customers=5)
        run = run_pipeline(settings, as_of)
        actions.append(run.outcome.decision.action)
        memory.append(resident_megabytes())
        with backend.engine().connect() as conn:
            current = pd.read_sql(sa.text(f"select customer_id, segment_id from {pg_schema}.customer_segments"), conn)
            open_rows = pd.read_sql(
                sa.text(
                    f"select customer_id, segment_id from {pg_schema}.customer_segment_history where valid_to is null"
                ),
                conn,
            )
        assert len(current) == len(open_rows)
        assert (
            current.set_index("customer_id")["segment_id"]
            .sort_index()
            .equals(open_rows.set_index("customer_id")["segment_id"].sort_index())
        ), f"history differs from the assignments after run {day + 1}"

    connections_after = our_connections(backend.engine())
    growth = memory[-1] - memory[1]
    print(
        f"\n[figure] soak: {RUNS} runs ({actions.count('fit')} fit, {actions.count('refit')} refit, "
        f"{actions.count('reuse')} reuse); connections {connections_before} -> {connections_after}; "
        f"RSS {memory[1]:.0f} MB after run 2 -> {memory[-1]:.0f} MB after run {RUNS}",
        file=sys.stderr,
    )
    assert connections_after == connections_before == 0
    assert growth < 40, f"memory grew by {growth:.0f} MB over {RUNS} runs"
    with backend.engine().connect() as conn:
        statuses = conn.execute(sa.text(f"select status, count(*) from {pg_schema}.segment_runs group by 1")).all()
    assert dict(statuses) == {"succeeded": RUNS}
    backend.dispose()
