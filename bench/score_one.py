"""Time to score one customer on demand (``segments score``), with and without an index on the
customer id column of the source, against PostgreSQL.

Loads a seeded synthetic shop into a schema of its own (COPY), runs the pipeline once to store a
model, then scores random customers. Run:
``uv run python bench/score_one.py [--customers 100000] [--url postgresql+psycopg://postgres@127.0.0.1/postgres]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

import numpy as np
from synthetic_shop import load_shop

from flows.wiring import run_segmentation
from tasks.database import make_engine
from tasks.on_demand import score_customer
from tasks.settings import load_settings
from tasks.synthetic import generate_transactions

AS_OF = date(2024, 3, 1)
SCHEMA = "bench_score_one"


def timed_scores(settings, customers: list[str]) -> list[float]:
    seconds = []
    for customer in customers:
        started = time.perf_counter()
        score_customer(settings, customer, AS_OF)
        seconds.append(time.perf_counter() - started)
    return seconds


def describe(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(seconds) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    engine = make_engine(args.url)
    rows = generate_transactions(args.customers, AS_OF, seed=3)
    seconds = load_shop(engine, SCHEMA, rows)
    print(f"Loaded {len(rows):,} transactions of {args.customers:,} customers in {seconds:.1f} s")
    settings = load_settings(
        database_url=args.url,
        source_table=f"{SCHEMA}.transactions",
        output_schema=SCHEMA,
        order_id_column="order_id",
        as_of=AS_OF,
        report_path="",
    )
    try:
        started = time.perf_counter()
        run = run_segmentation(settings)
        print(f"Full run (no index): {time.perf_counter() - started:.1f} s, K={run.outcome.n_clusters}")
        rng = np.random.default_rng(0)
        customers = [f"C{number:06d}" for number in rng.choice(args.customers, args.samples, replace=False)]
        print(f"Scoring one customer, {args.samples} customers each:")
        print(f"  without an index on customer_id: {describe(timed_scores(settings, customers))}")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"create index on {SCHEMA}.transactions (customer_id)")
            conn.exec_driver_sql(f"analyze {SCHEMA}.transactions")
        print(f"  with an index on customer_id:    {describe(timed_scores(settings, customers))}")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"drop schema if exists {SCHEMA} cascade")
        engine.dispose()


if __name__ == "__main__":
    main()
