"""Scale benchmark: the product's nightly run on synthetic transactions in PostgreSQL, against a
baseline commit of the product (``--baseline REF``) and optionally the naive notebook way, all
measured in the same run on the same data.

    uv run python bench/scale.py --rows 10000000 --index --baseline 118e2b6 [--repeat 3] [--naive]

Each run is a child process of its own, as the nightly job is, so that its peak memory (max RSS) is
its own; a CHECKPOINT comes before each. Two nights are run with the default settings (automatic K,
model policy auto): a first run into empty output tables, then the next night (as-of a day later).
The baseline runs from a git worktree of REF with this checkout's environment, into output tables of
its own; both read the same source. Rounds alternate which code goes first. The features each wrote
are compared: counts exact, money to the cent.

Beside them, in each round: the bare aggregation query (count(distinct order_id), sum, max per
customer, read to the client with COPY), the floor of any run's extract; and a bare binary COPY of
the rows this checkout wrote into an empty copy of ``customer_segments`` with the same indexes (the
server reading a file it wrote: no client work), the floor of the write.

The data stays in schema ``bench_scale`` between runs of the same size (``--fresh`` reloads it);
``--index`` creates the covering index of ``segments index`` (without it, it is dropped).
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
AS_OF = date(2024, 3, 1)
NEXT_AS_OF = date(2024, 3, 2)
SCHEMA = "bench_scale"
LINES_PER_CUSTOMER = 11.4  # what tasks.synthetic produces on average
NIGHTS = {"first": AS_OF, "next": NEXT_AS_OF}
CONFIGURATIONS = {1: "one query"}


def load(url: str, rows: int, fresh: bool, index: bool) -> int:
    """The synthetic transactions in ``bench_scale.transactions`` (kept between runs of one size), with
    or without the covering index. Returns the rows there."""
    import sqlalchemy as sa
    from synthetic_shop import load_shop

    from tasks.extract.covering_index import create_covering_index
    from tasks.synthetic import generate_transactions

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            present = conn.execute(sa.text("select to_regclass(:t)"), {"t": f"{SCHEMA}.transactions"}).scalar()
            existing = (
                conn.exec_driver_sql(f"select count(*) from {SCHEMA}.transactions").scalar_one() if present else 0
            )
        if fresh or abs(existing - rows) > 0.1 * rows:
            frame = generate_transactions(max(10, int(rows / LINES_PER_CUSTOMER)), AS_OF, seed=1)
            load_shop(engine, SCHEMA, frame)
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"vacuum analyze {SCHEMA}.transactions"
                )
            existing = len(frame)
        if index:
            create_covering_index(night_settings(url, "unused", 1))
        else:
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"drop index if exists {SCHEMA}.transactions_segments_covering_idx"
                )
    finally:
        engine.dispose()
    return int(existing)


def night_settings(url: str, output_schema: str, partitions: int, as_of: date = AS_OF):  # type: ignore[no-untyped-def]
    from tasks.settings import load_settings

    return load_settings(
        database_url=url,
        source_table=f"{SCHEMA}.transactions",
        output_schema=output_schema,
        order_id_column="order_id",
        partitions=partitions,
        as_of=as_of,
        force=True,
    )


def run_night(url: str, output_schema: str, partitions: int, night: str) -> dict[str, float]:
    """One nightly run of the code this process imports (this checkout's, or a baseline's worktree);
    a first night starts from an empty output schema. Returns its seconds, whole and by step."""
    import sqlalchemy as sa

    if night == "first":
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"drop schema if exists {output_schema} cascade")
            conn.exec_driver_sql(f"create schema {output_schema}")
        engine.dispose()
    settings = night_settings(url, output_schema, partitions, NIGHTS[night])
    try:
        from flows.wiring import run_segmentation
    except ImportError:  # a baseline from before the wiring had a module without Prefect
        from flows.segment_customers import run_segmentation

    started = time.perf_counter()
    run = run_segmentation(settings)
    figures = {"seconds": time.perf_counter() - started}
    return figures | {f"{name}_seconds": value for name, value in run.seconds.items()}


def naive(url: str) -> dict[str, float]:
    """The notebook way: ``read_sql("select *")``, a pandas groupby computing the product's definitions,
    StandardScaler, ``KMeans(n_init=10)``, ``to_sql``."""
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    engine = sa.create_engine(url)
    started = time.perf_counter()
    rows = pd.read_sql(f"select * from {SCHEMA}.transactions", engine)
    as_of = pd.Timestamp(AS_OF)
    rows = rows.dropna(subset=["customer_id", "occurred_at", "amount"])
    rows = rows[rows["occurred_at"] < as_of]
    rows["amount"] = rows["amount"].astype(float)
    orders = rows.groupby(["customer_id", "order_id"]).agg(net=("amount", "sum"), at=("occurred_at", "max"))
    orders = orders.reset_index()
    positive = orders[orders["net"].round(6) > 0].groupby("customer_id")
    features = pd.DataFrame({"monetary": orders.groupby("customer_id")["net"].sum()})
    features["frequency"] = positive.size()
    features["frequency"] = features["frequency"].fillna(0).astype(int)
    features["recency_days"] = np.floor((as_of - positive["at"].max()).dt.total_seconds() / 86400)
    clustered = features[features["frequency"] > 0]
    values = StandardScaler().fit_transform(clustered[["recency_days", "frequency", "monetary"]])
    labels = KMeans(n_clusters=5, n_init=10, random_state=0).fit_predict(values)
    clustered.assign(segment=labels).to_sql("naive_segments", engine, schema=SCHEMA, if_exists="replace")
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds}


def bare_aggregation(url: str) -> dict[str, float]:
    """The bare aggregation query, its rows read to the client through COPY (as the extract reads)."""
    import psycopg

    query = (
        f"select customer_id, count(distinct order_id), sum(amount), max(occurred_at) from {SCHEMA}.transactions "
        f"where occurred_at < '{AS_OF.isoformat()}' group by customer_id"
    )
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        with cursor.copy(f"copy ({query}) to stdout (format csv)") as copy:  # type: ignore[arg-type]
            received = sum(len(block) for block in copy)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": float(received)}


def bare_copy(url: str, output_schema: str) -> dict[str, float]:
    """A binary COPY of ``output_schema.customer_segments``'s rows into an empty copy of the table with
    the same indexes, read by the server from a file it wrote first (untimed)."""
    import psycopg

    source = f"{output_schema}.customer_segments"
    path = f"/tmp/bench_scale_{output_schema}.bin"  # noqa: S108 - the server's own scratch file
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"copy {source} to '{path}' (format binary)")  # type: ignore[arg-type]
        conn.execute("drop table if exists bench_scale.copy_floor")
        conn.execute(f"create table bench_scale.copy_floor (like {source} including all)")  # type: ignore[arg-type]
        conn.execute("checkpoint")
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(f"copy bench_scale.copy_floor from '{path}' (format binary)")  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        conn.execute("drop table bench_scale.copy_floor")
    Path(path).unlink(missing_ok=True)
    return {"seconds": seconds}


def settle(url: str) -> None:
    """A CHECKPOINT before each timed run, so that the WAL the run before wrote is flushed now, not
    during the next run's timing."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("checkpoint")
    engine.dispose()


def child(
    code: Path, url: str, *arguments: str, options: tuple[str, ...] = (), script: str = __file__
) -> tuple[dict[str, float], float]:
    """Run ``script``'s (this one's) ``--child`` step with the code of ``code`` importable; its figures (with
    ``process_seconds``, the child's whole life: interpreter, imports and the run) and its peak memory
    in MB."""
    settle(url)
    started = time.perf_counter()
    environment = os.environ | {"PYTHONPATH": f"{code}{os.pathsep}{HERE}", "PREFECT_LOGGING_LEVEL": "ERROR"}
    process = subprocess.Popen(  # noqa: S603 - this script, with arguments it built
        [sys.executable, script, "--url", url, *options, "--child", *arguments],
        cwd=code,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(arguments)} of {code} failed ({status})")
    figures = json.loads(output.strip().splitlines()[-1]) | {"process_seconds": time.perf_counter() - started}
    return figures, usage.ru_maxrss / 1024


def worktree(ref: str, into: Path) -> Path:
    """A checkout of ``ref`` beside this one (git worktree), for the baseline's code."""
    path = into / f"baseline-{ref}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True)  # noqa: S603, S607
    return path


def different_features(url: str, left: str, right: str) -> int:
    """Customers whose features differ between two output schemas (counts exact, money to the cent),
    or who are in one only."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        differing = conn.exec_driver_sql(
            f"select count(*) from {left}.customer_segments as a full join {right}.customer_segments as b "
            "using (customer_id) where a.customer_id is null or b.customer_id is null "
            "or a.frequency is distinct from b.frequency or a.recency_days is distinct from b.recency_days "
            "or a.tenure_days is distinct from b.tenure_days "
            "or round(a.monetary::numeric, 2) is distinct from round(b.monetary::numeric, 2) "
            "or round(a.avg_order_value::numeric, 2) is distinct from round(b.avg_order_value::numeric, 2)"
        ).scalar_one()
    engine.dispose()
    return int(differing)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data even if it is there")
    parser.add_argument("--index", action="store_true", help="create the covering index (`segments index`) first")
    parser.add_argument(
        "--baseline", metavar="REF", help="a commit to measure beside this checkout, e.g. the previous HEAD"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians and ranges are printed")
    parser.add_argument("--naive", action="store_true", help="also the naive notebook way, once a round")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # inside a child process: "night SCHEMA PARTITIONS NIGHT", "naive" or "load"
        if args.child[0] == "night":
            print(json.dumps(run_night(args.url, args.child[1], int(args.child[2]), args.child[3])))
        elif args.child[0] == "load":
            print(json.dumps({"rows": load(args.url, args.rows, args.fresh, args.index)}))
        elif args.child[0] == "aggregation":
            print(json.dumps(bare_aggregation(args.url)))
        elif args.child[0] == "copy":
            print(json.dumps(bare_copy(args.url, args.child[1])))
        else:
            print(json.dumps(naive(args.url)))
        return

    # in a child too: a child's peak memory counts from the size of the process it was forked from
    options = ("--rows", str(args.rows), *(["--fresh"] if args.fresh else []), *(["--index"] if args.index else []))
    loaded, _ = child(REPO, args.url, "load", options=options)
    rows = int(loaded["rows"])
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    codes = {"this checkout": REPO} | (
        {f"baseline {args.baseline}": worktree(args.baseline, scratch)} if args.baseline else {}
    )
    schemas = {name: f"bench_out_{index}" for index, name in enumerate(codes)}
    runs: dict[tuple[str, int, str], list[tuple[dict[str, float], float]]] = {}
    naive_runs: list[tuple[dict[str, float], float]] = []
    floors: dict[str, list[float]] = {"aggregation": [], "copy": []}
    differences: list[int] = []
    try:
        for round_number in range(args.repeat):
            order = list(codes) if round_number % 2 == 0 else list(reversed(codes))
            for partitions in CONFIGURATIONS:
                for name in order:
                    for night in NIGHTS:
                        key = (name, partitions, night)
                        figures = child(codes[name], args.url, "night", schemas[name], str(partitions), night)
                        runs.setdefault(key, []).append(figures)
                if len(codes) == 2:
                    differences.append(different_features(args.url, *schemas.values()))
            floors["aggregation"].append(child(REPO, args.url, "aggregation")[0]["seconds"])
            floors["copy"].append(child(REPO, args.url, "copy", schemas["this checkout"])[0]["seconds"])
            if args.naive:
                naive_runs.append(child(REPO, args.url, "naive"))
    finally:
        if args.baseline:
            baseline = str(codes[f"baseline {args.baseline}"])
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", baseline], check=False)  # noqa: S603, S607

    print(f"\n{rows:,} transactions, {'with' if args.index else 'without'} the covering index; {args.repeat} round(s)")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; PostgreSQL at {args.url.split('@')[-1]}")
    print("seconds as median (range); end to end: the job's process from its start (imports included);")
    print("run: the run alone, and its extract / model / write")
    print(f"{'':44}{'end to end':>22}{'run':>22}{'peak MB':>9}   steps")
    for (name, partitions, night), measured in runs.items():
        label = f"{name}, {CONFIGURATIONS[partitions]}, {night} night"
        process = [figures["process_seconds"] for figures, _ in measured]
        seconds = [figures["seconds"] for figures, _ in measured]
        steps = " / ".join(
            f"{statistics.median(figures[f'{step}_seconds'] for figures, _ in measured):.2f}"
            for step in ("extract", "model", "write")
        )
        peak = max(peak for _, peak in measured)
        print(f"{label:44}{summary(process):>22}{summary(seconds):>22}{peak:>9.0f}   {steps}")
    aggregation, copy = floors["aggregation"], floors["copy"]
    print(f"bare aggregation query: {summary(aggregation)} s; bare binary COPY of the rows: {summary(copy)} s")
    for (name, _, night), measured in runs.items():
        process = statistics.median(figures["process_seconds"] for figures, _ in measured)
        write = statistics.median(figures["write_seconds"] for figures, _ in measured)
        print(
            f"{name}, {night} night: end to end / bare aggregation {process / statistics.median(aggregation):.2f}x; "
            f"write / bare COPY {write / statistics.median(copy):.2f}x"
        )
    if len(codes) == 2:
        head, base = codes
        for partitions in CONFIGURATIONS:
            for night in NIGHTS:
                ratios = {}
                for measure in ("process_seconds", "seconds"):
                    ours = [figures[measure] for figures, _ in runs[head, partitions, night]]
                    theirs = [figures[measure] for figures, _ in runs[base, partitions, night]]
                    ratios[measure] = summary([a / b for a, b in zip(ours, theirs, strict=True)])
                print(
                    f"{CONFIGURATIONS[partitions]}, {night} night: this checkout / {base}: "
                    f"end to end {ratios['process_seconds']}, run {ratios['seconds']}"
                )
        verdict = "identical" if not any(differences) else "DIFFERENT"
        print(f"features: {verdict} ({max(differences)} customers differ at most; counts exact, money to the cent)")
    if naive_runs:
        seconds = [figures["seconds"] for figures, _ in naive_runs]
        print(f"naive notebook way: {summary(seconds)} s, peak {max(peak for _, peak in naive_runs):.0f} MB")


if __name__ == "__main__":
    main()
