"""Scale benchmark: the naive notebook way vs the product's pipeline vs the bare aggregation query,
on the same synthetic transactions in PostgreSQL, measured in the same run.

- naive: ``read_sql("select *")``, a pandas groupby computing the same definitions (shared/PRODUCT.md),
  StandardScaler, ``KMeans(n_init=10)``, ``to_sql``;
- product: ``tasks.pipeline.run_pipeline`` (extract in SQL, model, one write transaction);
- aggregation: the product's feature query alone, run to the end by EXPLAIN ANALYZE (timing off), its
  rows discarded on the server.

Each runs in a child process of its own, so its peak memory (max RSS) is its own. The naive and the
product features are compared: counts exact, money to the cent. Run:

    uv run python bench/scale.py --rows 1000000 [--index] [--partitions] [--repeat 3] [--url postgresql+psycopg://...]

The data stays in schema ``bench_scale`` between runs of the same size (``--fresh`` reloads it).
``--index`` creates the covering index of ``segments index`` first (without it, it is dropped), so
both plans can be measured on the same data. The product runs four nights, each run in a process of
its own as the nightly job runs: a first run into empty output tables (every customer enters the
history; it runs twice, first with K chosen by the elbow as the product does by default, then with
K=5 fixed as every other run and the naive way have it), the next night's run (as-of one day later,
a refit; only customers who moved are written to the history), and the night after, when K changes
from 5 to 3 (a third of the customers move: the history's indexes are rebuilt instead of updated row
by row), and a night of the default model policy (``auto``), which checks the stored model for age
and drift and keeps it. ``--partitions`` also runs the first run with K=5, the next night and the
night the model is kept with the aggregation in 2 customer-id ranges on threads
(``SEGMENTS_PARTITIONS=2``), and times the extract alone in 2 partitions on a local Dask cluster
(prefect-dask), against one query. ``--repeat N`` measures the
aggregations and product runs N times, round after round, and prints medians and ranges; each ratio
compares runs of the same round (the naive way runs once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

AS_OF = date(2024, 3, 1)
NEXT_AS_OF = date(2024, 3, 2)
RESHUFFLE_AS_OF = date(2024, 3, 3)
REUSE_AS_OF = date(2024, 3, 4)  # a night of the default policy (auto): the stored model is kept
RESHUFFLE_K = 3  # the night after the next, K changes: about a third of the customers move
SCHEMA = "bench_scale"
LINES_PER_CUSTOMER = 11.4  # what tasks.synthetic produces on average
K = 5
NIGHT_AS_OF = {
    "elbow": AS_OF,
    "first": AS_OF,
    "next": NEXT_AS_OF,
    "reshuffle": RESHUFFLE_AS_OF,
    "reuse": REUSE_AS_OF,
}
NIGHTS = {
    "elbow": "first run, K by the elbow",
    "first": "first run",
    "next": "next night",
    "reshuffle": f"night K changes {K} -> {RESHUFFLE_K}",
    "reuse": "night the model is kept",
}


def settings_for(url: str, **overrides: object):  # type: ignore[no-untyped-def]
    from tasks.settings import load_settings

    return load_settings(
        database_url=url,
        source_table=f"{SCHEMA}.transactions",
        output_schema=SCHEMA,
        order_id_column="order_id",
        force=True,
        **({"n_clusters": K, "model_policy": "refit"} | overrides),
    )


def step_load(url: str, rows: int, fresh: bool, index: bool) -> dict[str, float]:
    figures = _load_rows(url, rows, fresh)
    figures["index_seconds"] = _set_index(url, index)
    return figures


def _set_index(url: str, index: bool) -> float:
    import sqlalchemy as sa

    from tasks.database import make_engine
    from tasks.extract import create_covering_index

    started = time.perf_counter()
    if index:
        built = create_covering_index(settings_for(url))
        if built.action == "rebuilt":
            print(f"covering index rebuilt: {built.reason}", file=sys.stderr)
    else:
        engine = make_engine(url)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                sa.text(f"drop index if exists {SCHEMA}.transactions_segments_covering_idx")
            )
        engine.dispose()
    return time.perf_counter() - started


def _load_rows(url: str, rows: int, fresh: bool) -> dict[str, float]:
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
        if not fresh and abs(existing - rows) <= 0.1 * rows:  # the data of this size is there
            with engine.connect() as conn:  # reltuples was an estimate: the table says how many
                exact = conn.exec_driver_sql(f"select count(*) from {SCHEMA}.transactions").scalar_one()
            return {"rows": float(exact), "seconds": 0.0}
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


def step_aggregation(url: str, partitions: int = 1) -> dict[str, float]:
    """The product's feature query alone, run to the end on the server; with ``partitions`` 2, its two
    customer-id ranges at once on two connections (what the partitioned product's extract runs)."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    from tasks.database import make_engine
    from tasks.extract import inspect_source, prepare_extract_session, query_parameters, render_feature_query
    from tasks.partitions import partition_bounds

    settings = settings_for(url)
    engine = make_engine(url)
    source = inspect_source(engine, settings)
    bounds = partition_bounds(settings, partitions)
    ranges = list(zip((None, *bounds), (*bounds, None), strict=True))

    def explain(lower: object, upper: object) -> int:
        sql = render_feature_query(
            engine, settings, source, lower_bound=lower is not None, upper_bound=upper is not None
        )
        params = query_parameters(settings, AS_OF, source)
        params |= {name: value for name, value in (("lower_bound", lower), ("upper_bound", upper)) if value is not None}
        with engine.connect() as conn:
            prepare_extract_session(conn)  # the product's own session settings: same plan
            # The query runs to the end, computing every output column, and its rows are discarded on
            # the server. (A count(*) around it let PostgreSQL drop the unused aggregates: 4.6 s instead
            # of the query's 8.9 s at 10M rows, an aggregation that was not the product's.)
            plan = conn.execute(sa.text(f"explain (analyze, timing off, summary on) {sql}"), params).scalars().all()
        return next(int(line.split("rows=")[-1].split()[0].rstrip(")")) for line in plan if "actual rows=" in line)

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            rows = sum(pool.map(lambda bound: explain(*bound), ranges))
        return {"seconds": time.perf_counter() - started, "result_rows": float(rows)}
    finally:
        engine.dispose()


OUTPUTS = ("segment_transitions", "customer_segment_history", "customer_segments", "segment_profiles")
OUTPUTS_AFTER_VIEW = ("segment_models", "segment_runs")


def step_product(url: str, which: str, partitions: int) -> dict[str, float]:
    """One run of the product's pipeline in this process, as the nightly job runs: ``first`` into empty
    output tables (every customer enters the history), ``elbow`` the same with K chosen by the elbow
    (the product's default), ``next`` the following night (as-of one day later, a refit; only
    customers who moved are written to the history), ``reshuffle`` the night after, with K=3."""
    from tasks.database import make_engine
    from tasks.pipeline import run_pipeline

    engine = make_engine(url)
    if which in ("elbow", "first"):
        with engine.begin() as conn:  # a first run: no output table yet
            conn.exec_driver_sql(f"drop view if exists {SCHEMA}.segment_transitions")
            for table in (*OUTPUTS[1:], *OUTPUTS_AFTER_VIEW):
                conn.exec_driver_sql(f"drop table if exists {SCHEMA}.{table} cascade")
    as_of = NIGHT_AS_OF[which]
    clusters = {"elbow": None, "reshuffle": RESHUFFLE_K}.get(which, K)  # None: K chosen by the elbow
    # every night refits but the "reuse" one, which runs the default policy: it checks the stored model
    # for age and drift (PSI, and a fresh KMeans on a sample) and keeps it
    policy = "auto" if which == "reuse" else "refit"
    started = time.perf_counter()
    run = run_pipeline(settings_for(url, partitions=partitions, n_clusters=clusters, model_policy=policy), as_of)
    if which == "reuse" and run.outcome.decision.action != "reuse":
        raise SystemExit(f"the reuse night refitted: {run.outcome.decision.reason}")
    figures = {"seconds": time.perf_counter() - started}
    figures |= {f"{name}_seconds": value for name, value in run.seconds.items()}
    figures["customers"] = float(len(run.outcome.segments.assignments))
    with engine.connect() as conn:  # customers who entered the history (moved or new) this night
        figures["moved"] = float(
            conn.exec_driver_sql(
                f"select count(*) from {SCHEMA}.customer_segment_history where valid_from = %(as_of)s",
                {"as_of": as_of},
            ).scalar_one()
        )
    engine.dispose()
    return figures


def step_partitions(url: str) -> dict[str, float]:
    """The extract as one query, then split in two customer partitions run on a local Dask cluster
    through prefect-dask (the Prefect flow machinery warmed up first, outside the timing)."""
    import os
    import tempfile

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry writes to its SQLite
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")  # the bench prints its own table
    import logging

    from prefect import flow

    from tasks.extract import extract_customer_features
    from tasks.partitions import extract_in_partitions
    from tasks.steps import dask_task_runner, extract_partitions_flow

    @flow
    def warm_up() -> None:
        return None

    warm_up()
    for name in ("distributed", "prefect", "prefect.task_runner.dask"):  # Dask's cluster start-up chatter
        logging.getLogger(name).setLevel(logging.ERROR)
    settings = settings_for(url, partitions=2)
    started = time.perf_counter()
    whole = extract_customer_features(settings, AS_OF)
    one_query = time.perf_counter() - started
    runner = dask_task_runner(settings)
    started = time.perf_counter()
    parts = extract_in_partitions(
        settings, AS_OF, lambda plan: extract_partitions_flow.with_options(task_runner=runner)(plan)
    )
    two_partitions = time.perf_counter() - started
    if not parts.features.equals(whole.features):
        raise SystemExit("partitioned features differ from the one-query extract")
    return {"one_query_seconds": one_query, "two_partitions_seconds": two_partitions}


def step_naive(url: str, features_csv: str, which: str) -> dict[str, float]:
    """The notebook way, written as the notebooks write it, computing the product's definitions as of
    the date of the product's night ``which``: its last run, whose table the features are compared with."""
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
    as_of = pd.Timestamp(NIGHT_AS_OF[which])
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


def settle(url: str) -> None:
    """Before each timed step: a CHECKPOINT, so that the WAL written by the step before (a product run
    writes ~900k rows twice, the naive way 877k) is flushed now rather than during the next step's
    timing. Needs a superuser or pg_checkpoint; without it, the step runs unsettled."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("checkpoint")
    except sa.exc.DBAPIError as error:
        print(f"(no checkpoint between steps: {error.orig})", file=sys.stderr)
    finally:
        engine.dispose()


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (VMs of one kind differ: the bench prints it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def server_speed(url: str, rounds: int = 3) -> list[float]:
    """Seconds the server takes for one fixed CPU-bound query (a numeric sum of 15M values), a few times.

    It reads no table, so it compares VMs' speed for PostgreSQL's own work: the ceiling line follows it."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    seconds = []
    try:
        with engine.connect() as conn:
            for _ in range(rounds):
                clock = time.perf_counter()
                conn.exec_driver_sql("select sum(x::numeric) from generate_series(1, 15000000) as x").scalar_one()
                seconds.append(time.perf_counter() - clock)
    finally:
        engine.dispose()
    return seconds


def run_child(step: str, url: str, *extra: str) -> tuple[dict[str, float], float]:
    """Run one step in a child process; return its figures and its peak memory in MB."""
    if step != "load":
        settle(url)
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


def _figure(values: list[float], peak_mb: float | None = None) -> str:
    """The median and the peak memory in their columns, then the range when there are several rounds."""
    peak = f"{peak_mb:>10.0f}" if peak_mb is not None else " " * 10
    spread = f"  {min(values):.1f}-{max(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.median(values):>10.1f}{peak}{spread}"


def _ratio(values: list[float]) -> str:
    median = f"{statistics.median(values):.2f}"
    return median + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def _speedup(naive_seconds: list[float], seconds: list[float]) -> str:
    """Naive / ``seconds``: with the naive way run in every round, the median of the rounds' own ratios
    and their range; with it run once, that run against the median of ``seconds``."""
    if len(naive_seconds) == len(seconds) > 1:
        speedups = [naive / run for naive, run in zip(naive_seconds, seconds, strict=True)]
        return f"{statistics.median(speedups):.1f}x ({min(speedups):.1f}-{max(speedups):.1f}x)"
    return f"{naive_seconds[-1] / statistics.median(seconds):.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data even if it is there")
    parser.add_argument("--index", action="store_true", help="create the covering index (`segments index`) first")
    parser.add_argument(
        "--partitions",
        action="store_true",
        help="also run the product with 2 customer partitions, and the extract alone on a local Dask cluster",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the aggregation and product runs; medians and ranges are printed (the naive way runs once, "
        "after them, unless --naive-each-round)",
    )
    parser.add_argument(
        "--naive-each-round",
        action="store_true",
        help="run the naive way in every round too (at 10M rows ~80 s a round), not once after the rounds: "
        "each naive / product ratio then compares runs of the same round",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--features-csv", help=argparse.SUPPRESS)
    parser.add_argument("--which", help=argparse.SUPPRESS)
    parser.add_argument("--product-partitions", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:  # inside a child process
        figures = {
            "load": lambda: step_load(args.url, args.rows, args.fresh, args.index),
            "aggregation": lambda: step_aggregation(args.url, args.product_partitions),
            "product": lambda: step_product(args.url, args.which, args.product_partitions),
            "naive": lambda: step_naive(args.url, args.features_csv, args.which),
            "partitions": lambda: step_partitions(args.url),
        }[args.step]()
        print(json.dumps(figures))
        return

    loaded, _ = run_child(
        "load",
        args.url,
        "--rows",
        str(args.rows),
        *(["--fresh"] if args.fresh else []),
        *(["--index"] if args.index else []),
    )
    speed = server_speed(args.url)
    features_csv = str(Path(tempfile.gettempdir()) / f"bench_scale_naive_{os.getpid()}.csv")
    # Each round measures every aggregation and product run once, in this order, so that a ratio
    # compares runs made moments apart (this machine's speed drifts by up to 40% over minutes).
    aggregations: dict[int, list[dict[str, float]]] = {1: [], 2: []} if args.partitions else {1: []}
    products: dict[tuple[int, str], list[tuple[dict[str, float], float]]] = {
        (partitions, which): []
        for partitions in ((1, 2) if args.partitions else (1,))
        for which in (
            ("elbow", "first", "next", "reshuffle", "reuse") if partitions == 1 else ("first", "next", "reuse")
        )
    }
    last_night = list(products)[-1][1]  # the product's table is the last run's
    naives: list[tuple[dict[str, float], float]] = []
    for round_number in range(args.repeat):
        for partitions, figures in aggregations.items():
            measured, peak_mb = run_child("aggregation", args.url, "--product-partitions", str(partitions))
            figures.append(measured)
            if partitions == 1:
                aggregation_mb = peak_mb
        for (partitions, which), runs in products.items():
            runs.append(run_child("product", args.url, "--which", which, "--product-partitions", str(partitions)))
        if args.naive_each_round or round_number == args.repeat - 1:
            naives.append(run_child("naive", args.url, "--features-csv", features_csv, "--which", last_night))
    verdict = compare_features(args.url, features_csv)
    partitions_figures = run_child("partitions", args.url)[0] if args.partitions else None
    os.unlink(features_csv)

    index = "with the covering index" if args.index else "without index"
    customers = int(products[1, "first"][0][0]["customers"])
    rounds = f", medians of {args.repeat} rounds" if args.repeat > 1 else ""
    print(
        f"\n{int(loaded['rows']):,} transactions, {customers:,} customers, "
        f"PostgreSQL {args.url.split('@')[-1]}, {os.cpu_count()} cores, {index}{rounds}"
    )
    print(
        f"machine: {cpu_name()}; the server's speed check (a numeric sum of 15M values, no table) took "
        f"{statistics.median(speed):.1f} s ({min(speed):.1f}-{max(speed):.1f}, {len(speed)} times)"
    )
    print(f"{'':58}{'seconds':>10}{'peak MB':>10}{'  range' if args.repeat > 1 else ''}")
    aggregation = [figures["seconds"] for figures in aggregations[1]]
    print(f"{'bare aggregation query':58}{_figure(aggregation, aggregation_mb)}")
    if 2 in aggregations:
        print(f"{'bare aggregation, 2 partitions at once':58}{_figure([f['seconds'] for f in aggregations[2]])}")
    for (partitions, which), runs in products.items():
        label = f"product, {NIGHTS[which]}"
        label += f", {partitions} partitions (threads)" if partitions > 1 else ""
        peak_mb = max(peak for _, peak in runs)
        print(f"{label:58}{_figure([figures['seconds'] for figures, _ in runs], peak_mb)}")
        for name in ("extract", "model", "write"):
            print(f"{'  ' + name:58}{_figure([figures[name + '_seconds'] for figures, _ in runs])}")
        moved = statistics.median(figures["moved"] for figures, _ in runs)
        print(f"{'  customers who entered the history':58}{moved:>10,.0f}")
    naive_seconds = [figures["seconds"] for figures, _ in naives]
    label = "naive notebook way" + ("" if args.naive_each_round else " (once)")
    print(f"{label:58}{_figure(naive_seconds, max(peak for _, peak in naives))}")
    for name in ("read_sql", "features", "model", "to_sql"):
        print(f"{'  ' + name:58}{_figure([figures[name + '_seconds'] for figures, _ in naives])}")
    # The most any run could reach against the naive way on this machine: a run that cost nothing but
    # its aggregation. The naive way is Python's work and the aggregation PostgreSQL's, and VMs differ
    # in how fast each runs, so this ceiling moves from VM to VM.
    ceilings = [f"one query {_speedup(naive_seconds, aggregation)}"]
    if 2 in aggregations:
        ceilings.append(f"2 partitions at once {_speedup(naive_seconds, [f['seconds'] for f in aggregations[2]])}")
    print(f"naive / bare aggregation (a run that cost nothing but its aggregation): {', '.join(ceilings)}")
    for (partitions, which), runs in products.items():
        label = NIGHTS[which] + (f", {partitions} partitions" if partitions > 1 else "")
        seconds = [figures["seconds"] for figures, _ in runs]
        # each round's product run against the same round's aggregation
        ratios = [run / query for run, query in zip(seconds, aggregation, strict=True)]
        same_shape = ""
        if partitions == 2:
            two_range = [f["seconds"] for f in aggregations[2]]
            shaped = [run / query for run, query in zip(seconds, two_range, strict=True)]
            same_shape = f", / its 2-partition aggregation {_ratio(shaped)}"
        print(
            f"{label}: naive / product {_speedup(naive_seconds, seconds)} faster (target >= 10x); "
            f"product / aggregation {_ratio(ratios)}{same_shape} (target <= 1.5); "
            f"peak {max(peak for _, peak in runs):.0f} MB (target <= 600)"
        )
    if partitions_figures:
        one, two = partitions_figures["one_query_seconds"], partitions_figures["two_partitions_seconds"]
        print(
            f"extract alone: one query {one:.1f} s; two customer partitions on a local Dask cluster "
            f"(prefect-dask) {two:.1f} s (features identical)"
        )
    print(f"features: {verdict}")


if __name__ == "__main__":
    main()
