"""Do segments stay put when the model is refitted a week later?

For each seed, transactions of the demo's shop generator and of retail-shaped data with no planted
groups (:func:`bench.segment_quality.retail_shaped_transactions`) go through two product runs on an
SQLite file: a first run (a model fitted, K chosen automatically) as of a week before the data's end,
and a refit (``--model-policy refit``) as of its end, which sees the week's new orders. Printed per
run, from ``segment_runs`` as a BI tool reads it: K before and after, the customers who changed
segment, those who moved only because the model changed (``moved_by_refit``), and the share who kept
their segment id. Targets: ``moved_by_refit`` at most 3% of the customers, at least 95% keep their id.

    uv run python bench/stable_ids.py [--seeds 1 2 3 4 5] [--customers 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from bench.segment_quality import AS_OF, retail_shaped_transactions
from flows.wiring import run_segmentation
from tasks.demo import load_demo_transactions
from tasks.settings import load_settings

MOVED_BY_REFIT_AT_MOST = 0.03
KEPT_AT_LEAST = 0.95


def refit_a_week_later(shape: str, seed: int, customers: int) -> dict[str, object]:
    path = Path(tempfile.mkdtemp()) / "shop.db"
    load_demo_transactions(path, customers=customers, as_of=AS_OF, seed=seed)
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    if shape == "retail":
        with engine.begin() as conn:
            conn.exec_driver_sql("delete from transactions")
            retail_shaped_transactions(customers, seed).to_sql("transactions", conn, if_exists="append", index=False)
    started = time.perf_counter()
    for as_of in (AS_OF - timedelta(days=7), AS_OF):
        settings = load_settings(
            database_url=url, order_id_column="order_id", as_of=as_of, model_policy="refit", report_path=""
        )
        run_segmentation(settings)
    runs = pd.read_sql("select * from segment_runs order by started_at", engine)
    with engine.connect() as conn:  # customers of both runs: a history row from before the refit
        in_both = conn.execute(
            sa.text(
                "select count(*) from customer_segments c where exists (select 1 from customer_segment_history h "
                "where h.customer_id = c.customer_id and h.valid_from < :as_of)"
            ),
            {"as_of": AS_OF.isoformat()},
        ).scalar_one()
    engine.dispose()
    first, refit = runs.iloc[0], runs.iloc[1]
    return {
        "data": shape,
        "seed": seed,
        "customers": int(refit["customers"]),
        "in both runs": in_both,
        "K": f"{first['n_clusters']} -> {refit['n_clusters']}",
        "moved": int(refit["customers_moved"]),
        "moved by refit": int(refit["moved_by_refit"]) / in_both,
        "kept their id": 1 - int(refit["customers_moved"]) / in_both,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    rows = [refit_a_week_later(shape, seed, args.customers) for shape in ("shop", "retail") for seed in args.seeds]
    table = pd.DataFrame(rows)
    print(
        table.to_string(
            index=False,
            formatters={
                "moved by refit": "{:.2%}".format,
                "kept their id": "{:.2%}".format,
                "seconds": "{:.1f}".format,
            },
        )
    )
    worst_refit, worst_kept = table["moved by refit"].max(), table["kept their id"].min()
    print(
        f"\nworst moved_by_refit {worst_refit:.2%} (target <= {MOVED_BY_REFIT_AT_MOST:.0%}): "
        f"{'met' if worst_refit <= MOVED_BY_REFIT_AT_MOST else 'missed'}; worst kept {worst_kept:.2%} "
        f"(target >= {KEPT_AT_LEAST:.0%}): {'met' if worst_kept >= KEPT_AT_LEAST else 'missed'}"
    )


if __name__ == "__main__":
    main()
