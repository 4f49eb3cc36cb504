"""Scale benchmark: the naive notebook way vs the product's pipeline vs the bare aggregation query,
on the same synthetic transactions in PostgreSQL, measured in the same run.

- naive: ``read_sql("select *")``, a pandas groupby computing the same definitions (shared/PRODUCT.md),
  StandardScaler, ``KMeans(n_init=10)``, ``to_sql``;
- product: ``tasks.pipeline.run_pipeline`` (extract in SQL, model, one write transaction);
- aggregation: the product's feature query alone, results discarded on the server.

Each runs in a child process of its own, so its peak memory (max RSS) is its own. The naive and the
product features are compared: counts exact, money to the cent. Run:

    uv run python bench/scale.py --rows 1000000 [--url postgresql+psycopg://postgres@127.0.0.1/postgres]

The data stays in schema ``bench_scale`` between runs of the same size (``--fresh`` reloads it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

AS_OF = date(2024, 3, 1)
SCHEMA = "bench_scale"
LINES_PER_CUSTOMER = 11.4  # what tasks.synthetic produces on average
K = 5


def settings_for(url: str, **overrides: object):  # type: ignore[no-untyped-def]
    from tasks.settings import load_settings

    return load_settings(
        database_url=url,
        source_table=f"{SCHEMA}.transactions",
        output_schema=SCHEMA,
        order_id_column="order_id",
        n_clusters=K,
        model_policy="refit",
        force=True,
        **overrides,
    )


def step_load(url: str, rows: int, fresh: bool) -> dict[str, float]:
    import sqlalchemy as sa
    from synthetic_shop import load_shop

    from tasks.database import make_engine
    from tasks.synthetic import generate_transactions

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            existing = conn.execute(
                sa.text(
                    "select coalesce((select reltuples::bigint from pg_class c "
                    "join pg_namespace n on n.oid = c.relnamespace "
                    "where n.nspname = :s and c.relname = 'transactions'), -1)"
                ),
                {"s": SCHEMA},
            ).scalar_one()
        if not fresh and existing > 0.9 * rows:
            return {"rows": float(existing), "seconds": 0.0}
        customers = max(10, int(rows / LINES_PER_CUSTOMER))
        started = time.perf_counter()
        frame = generate_transactions(customers, AS_OF, seed=1)
        generated = time.perf_counter() - started
        copied = load_shop(engine, SCHEMA, frame)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                f"vacuum analyze {SCHEMA}.transactions"
            )
        return {"rows": float(len(frame)), "generate_seconds": generated, "copy_seconds": copied}
    finally:
        engine.dispose()


def step_aggregation(url: str) -> dict[str, float]:
    import sqlalchemy as sa

    from tasks.database import make_engine
    from tasks.extract import query_parameters, render_feature_query

    settings = settings_for(url)
    engine = make_engine(url)
    try:
        sql = render_feature_query(engine, settings)
        with engine.connect() as conn:
            conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
            started = time.perf_counter()
            count = conn.execute(
                sa.text(f"select count(*) from ({sql}) as features"), query_parameters(settings, AS_OF)
            ).scalar_one()
            return {"seconds": time.perf_counter() - started, "result_rows": float(count)}
    finally:
        engine.dispose()


def step_product(url: str) -> dict[str, float]:
    from tasks.pipeline import run_pipeline

    started = time.perf_counter()
    run = run_pipeline(settings_for(url), AS_OF)
    return {
        "seconds": time.perf_counter() - started,
        **{f"{name}_seconds": value for name, value in run.seconds.items()},
        "customers": float(len(run.outcome.segments.assignments)),
    }


def step_naive(url: str, features_csv: str) -> dict[str, float]:
    """The notebook way, written as the notebooks write it, computing the product's definitions."""
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    engine = sa.create_engine(url)
    timings = {}
    started = time.perf_counter()
    rows = pd.read_sql(f"select * from {SCHEMA}.transactions", engine)
    timings["read_sql_seconds"] = time.perf_counter() - started
    clock = time.perf_counter()
    as_of = pd.Timestamp(AS_OF)
    rows = rows.dropna(subset=["customer_id", "occurred_at", "amount"])
    rows = rows[rows["occurred_at"] < as_of]
    rows["amount"] = rows["amount"].astype(float)
    orders = (
        rows.groupby(["customer_id", "order_id"]).agg(net=("amount", "sum"), at=("occurred_at", "max")).reset_index()
    )
    orders["positive"] = orders["net"].round(6) > 0
    positive = orders[orders["positive"]]
    features = pd.DataFrame({"monetary": orders.groupby("customer_id")["net"].sum()})
    grouped = positive.groupby("customer_id")
    features["frequency"] = grouped.size()
    features["frequency"] = features["frequency"].fillna(0).astype(int)
    features["recency_days"] = np.floor((as_of - grouped["at"].max()).dt.total_seconds() / 86400)
    features["tenure_days"] = np.floor((as_of - grouped["at"].min()).dt.total_seconds() / 86400)
    features["avg_order_value"] = features["monetary"] / features["frequency"].replace(0, np.nan)
    timings["features_seconds"] = time.perf_counter() - clock
    clock = time.perf_counter()
    clustered = features[features["frequency"] > 0]
    values = StandardScaler().fit_transform(clustered[["recency_days", "frequency", "monetary"]])
    labels = KMeans(n_clusters=K, n_init=10, random_state=0).fit_predict(values)
    timings["model_seconds"] = time.perf_counter() - clock
    clock = time.perf_counter()
    out = clustered.assign(segment=labels)
    out.to_sql("naive_segments", engine, schema=SCHEMA, if_exists="replace")
    timings["to_sql_seconds"] = time.perf_counter() - clock
    timings["seconds"] = time.perf_counter() - started
    features.reset_index().to_csv(features_csv, index=False)
    engine.dispose()
    return timings


def run_child(step: str, url: str, *extra: str) -> tuple[dict[str, float], float]:
    """Run one step in a child process; return its figures and its peak memory in MB."""
    process = subprocess.Popen(  # noqa: S603 - this script, with arguments it built
        [sys.executable, __file__, "--step", step, "--url", url, *extra], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"step {step} failed ({status})")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def compare_features(url: str, features_csv: str) -> str:
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    naive = pd.read_csv(features_csv, dtype={"customer_id": str}).set_index("customer_id").sort_index()
    engine = sa.create_engine(url)
    product = (
        pd.read_sql(
            f"select customer_id, recency_days, frequency, monetary, avg_order_value, tenure_days "
            f"from {SCHEMA}.customer_segments",
            engine,
        )
        .set_index("customer_id")
        .sort_index()
    )
    engine.dispose()
    if not naive.index.equals(product.index):
        return f"DIFFERENT customers: naive {len(naive):,}, product {len(product):,}"
    for column in ("frequency", "recency_days", "tenure_days"):
        a, b = naive[column].fillna(-1).astype(int), product[column].fillna(-1).astype(int)
        if not (a == b).all():
            return f"DIFFERENT {column} for {(a != b).sum():,} customers"
    for column in ("monetary", "avg_order_value"):
        if not np.allclose(naive[column].fillna(0), product[column].astype(float).fillna(0), atol=0.005):
            return f"DIFFERENT {column}"
    return f"identical for {len(naive):,} customers (counts exact, money to the cent)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data even if it is there")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--features-csv", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:  # inside a child process
        figures = {
            "load": lambda: step_load(args.url, args.rows, args.fresh),
            "aggregation": lambda: step_aggregation(args.url),
            "product": lambda: step_product(args.url),
            "naive": lambda: step_naive(args.url, args.features_csv),
        }[args.step]()
        print(json.dumps(figures))
        return

    loaded, _ = run_child("load", args.url, "--rows", str(args.rows), *(["--fresh"] if args.fresh else []))
    features_csv = str(Path(tempfile.gettempdir()) / f"bench_scale_naive_{os.getpid()}.csv")
    aggregation, aggregation_mb = run_child("aggregation", args.url)
    product, product_mb = run_child("product", args.url)
    naive, naive_mb = run_child("naive", args.url, "--features-csv", features_csv)
    verdict = compare_features(args.url, features_csv)
    os.unlink(features_csv)

    print(
        f"\n{int(loaded['rows']):,} transactions, {int(product['customers']):,} customers, "
        f"PostgreSQL {args.url.split('@')[-1]}, {os.cpu_count()} cores"
    )
    print(f"{'':32}{'seconds':>10}{'peak MB':>10}")
    print(f"{'bare aggregation query':32}{aggregation['seconds']:>10.1f}{aggregation_mb:>10.0f}")
    print(f"{'product end to end':32}{product['seconds']:>10.1f}{product_mb:>10.0f}")
    for name in ("extract", "model", "write"):
        print(f"{'  ' + name:32}{product[name + '_seconds']:>10.1f}")
    print(f"{'naive notebook way':32}{naive['seconds']:>10.1f}{naive_mb:>10.0f}")
    for name in ("read_sql", "features", "model", "to_sql"):
        print(f"{'  ' + name:32}{naive[name + '_seconds']:>10.1f}")
    print(
        f"naive / product: {naive['seconds'] / product['seconds']:.1f}x faster (target >= 10x); "
        f"product / aggregation: {product['seconds'] / aggregation['seconds']:.2f} (target <= 1.5); "
        f"product peak {product_mb:.0f} MB (target <= 600)"
    )
    print(f"features: {verdict}")


if __name__ == "__main__":
    main()
