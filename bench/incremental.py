"""Incremental nights against full runs, on the same data in the same bench run (PostgreSQL).

    uv run python bench/incremental.py [--rows 10000000] [--nights 3] [--grow 3] [--keep]

About 877k customers with a history of ``--rows`` transactions (tasks.synthetic, two years, in
``bench_incr.transactions`` with a load sequence ``loaded_seq``, the covering index and the index on
the sequence of `segments index`), then the same customers with ``--grow`` times the history (the
history copied back in time, two years a copy). For each size, two jobs start from empty output
schemas with a full run as of the day after the latest row: one with
``SEGMENTS_CHANGED_AT_COLUMN=loaded_seq`` (incremental nights), one without (a full aggregation every
night, as before). Then each night loads 100,000 rows (1% of 10M): new orders, refunds of old orders,
rows backfilled with old dates, new customers, a few guest checkouts, dated the day before the
night's as-of (a day later each night); and both jobs run, in alternating order, each in a child
process of its own after a CHECKPOINT. K is fixed (5) and the model policy is the default (auto).
After each night the features the two jobs wrote are compared (counts exact, money to the cent).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import date, timedelta
from pathlib import Path

from scale import child, cpu_name, different_features, summary

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCHEMA = "bench_incr"
AS_OF = date(2024, 3, 1)
LINES_PER_CUSTOMER = 11.4  # what tasks.synthetic produces on average
NIGHT_ROWS = 100_000
JOBS = {"incremental": "bench_incr_nightly", "full": "bench_incr_full"}


def settings_for(url: str, job: str, as_of: date):  # type: ignore[no-untyped-def]
    from tasks.settings import load_settings

    return load_settings(
        database_url=url,
        source_table=f"{SCHEMA}.transactions",
        output_schema=JOBS[job],
        order_id_column="order_id",
        changed_at_column="loaded_seq" if job == "incremental" else None,
        n_clusters=5,
        as_of=as_of,
        report_path="",
        force=True,
    )


def execute(url: str, *statements: str, autocommit: bool = False) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        if autocommit:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for statement in statements:
            conn.exec_driver_sql(statement)
        if not autocommit:
            conn.commit()
    engine.dispose()


def load(url: str, rows: int) -> dict[str, float]:
    """The history of ``rows`` transactions (two years up to AS_OF), with a load sequence and the
    indexes of `segments index`."""
    import sqlalchemy as sa

    from tasks.extract.covering_index import create_source_indexes
    from tasks.load.copy import copy_rows_into
    from tasks.synthetic import generate_transactions

    frame = generate_transactions(max(10, int(rows / LINES_PER_CUSTOMER)), AS_OF - timedelta(days=1), seed=1)
    execute(
        url,
        f"drop schema if exists {SCHEMA} cascade",
        f"create schema {SCHEMA}",
        f"create table {SCHEMA}.transactions (customer_id text, order_id text, occurred_at timestamp, "
        "amount numeric(12,2), loaded_seq bigserial)",
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        copy_rows_into(conn, SCHEMA, "transactions", ["customer_id", "order_id", "occurred_at", "amount"], frame)
    engine.dispose()
    create_source_indexes(settings_for(url, "incremental", AS_OF))
    return {"rows": len(frame)}


def grow(url: str, copies: int, loaded: int) -> dict[str, float]:
    """The same customers with ``copies`` times the history: the ``loaded`` rows of the first load
    copied back by two years a copy (order ids suffixed), then the source analyzed again."""
    inserts = [
        f"insert into {SCHEMA}.transactions (customer_id, order_id, occurred_at, amount) "
        f"select customer_id, order_id || '-h{copy}', occurred_at - interval '{2 * copy} years', amount "
        f"from {SCHEMA}.transactions where loaded_seq <= {loaded}"
        for copy in range(1, copies)
    ]
    execute(url, *inserts)
    execute(url, f"vacuum analyze {SCHEMA}.transactions", autocommit=True)
    return {"rows": float(count_rows(url))}


def latest_day(url: str) -> date:
    """The day after the source's latest row."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        latest = conn.exec_driver_sql(f"select max(occurred_at) from {SCHEMA}.transactions").scalar_one()
    engine.dispose()
    return latest.date() + timedelta(days=1)


def count_rows(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"select count(*) from {SCHEMA}.transactions").scalar_one()
    engine.dispose()
    return int(rows)


def add_night(url: str, first: date, night: int, seed: int) -> dict[str, float]:
    """The night's rows, dated the day before its as-of: 80% new order lines of known customers, 10%
    refunds of old orders, 8.5% rows backfilled with dates up to two years back, 1% new customers,
    0.5% guest checkouts."""
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from tasks.load.copy import copy_rows_into

    random = np.random.default_rng(seed)
    day = pd.Timestamp(first + timedelta(days=night - 1))
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        customers = conn.exec_driver_sql(f"select customer_id from {JOBS['full']}.customer_segments").scalars()
        customers = np.array(list(customers), dtype=object)
        refunded = pd.read_sql(
            sa.text(
                f"select customer_id, order_id, -amount as amount from {SCHEMA}.transactions tablesample system (1) "
                "where customer_id is not null and amount > 0 limit :n"
            ),
            conn,
            params={"n": NIGHT_ROWS // 10},
        )

    def within(start: pd.Timestamp, days: float, count: int) -> pd.Series:
        return pd.Series(start + pd.to_timedelta(random.uniform(0, days * 86_400, count), unit="s")).dt.floor("s")

    def money(count: int) -> pd.Series:
        return pd.Series(np.round(random.lognormal(3.5, 0.8, count), 2)).astype(str)

    new_lines, backfilled, newcomers, guests = 80_000, 8_500, 1_000, 500
    parts = [
        pd.DataFrame(
            {
                "customer_id": random.choice(customers, new_lines),
                "order_id": [f"N{seed}-{i // 2}" for i in range(new_lines)],
                "occurred_at": within(day, 1, new_lines),
                "amount": money(new_lines),
            }
        ),
        refunded.assign(occurred_at=within(day, 1, len(refunded)), amount=refunded["amount"].astype(str)),
        pd.DataFrame(
            {
                "customer_id": random.choice(customers, backfilled),
                "order_id": [f"B{seed}-{i}" for i in range(backfilled)],
                "occurred_at": within(day - pd.Timedelta(days=730), 729, backfilled),
                "amount": money(backfilled),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": [f"NEW{seed}-{i}" for i in range(newcomers)],
                "order_id": [f"W{seed}-{i}" for i in range(newcomers)],
                "occurred_at": within(day, 1, newcomers),
                "amount": money(newcomers),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": [None] * guests,
                "order_id": [f"G{seed}-{i}" for i in range(guests)],
                "occurred_at": within(day, 1, guests),
                "amount": money(guests),
            }
        ),
    ]
    rows = pd.concat(parts, ignore_index=True)
    # an order's lines share its customer: the new lines pair up by order id
    first_of_order = rows.iloc[:new_lines].groupby("order_id")["customer_id"].transform("first")
    rows.loc[: new_lines - 1, "customer_id"] = first_of_order.to_numpy()
    with engine.begin() as conn:
        copy_rows_into(conn, SCHEMA, "transactions", ["customer_id", "order_id", "occurred_at", "amount"], rows)
    engine.dispose()
    execute(url, f"analyze {SCHEMA}.transactions", autocommit=True)
    return {"rows": float(len(rows))}


def run_job(url: str, job: str, first: date, night: int) -> dict[str, float | str | None]:
    """One run of a job as of ``first`` + ``night`` days (night 0 starts from empty output tables)."""
    import time

    from flows.wiring import run_segmentation

    if night == 0:
        execute(url, f"drop schema if exists {JOBS[job]} cascade")
    started = time.perf_counter()
    run = run_segmentation(settings_for(url, job, first + timedelta(days=night)))
    state = run.extract.state
    return {
        "seconds": time.perf_counter() - started,
        **{f"{name}_seconds": value for name, value in run.seconds.items()},
        "mode": "full" if state is None else state.mode,
        "recomputed": None if state is None else state.customers_recomputed,
        "customers": len(run.extract.features),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--grow", type=int, default=3, help="history multiple of the second size (1: one size)")
    parser.add_argument(
        "--keep", action="store_true", help="use the data already there (grown: only the larger size is run)"
    )
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        step, *rest = args.child
        if step == "load":
            figures: dict[str, object] = load(args.url, args.rows)
        elif step == "grow":
            figures = grow(args.url, int(rest[0]), int(rest[1]))
        elif step == "add":
            figures = add_night(
                args.url, date.fromisoformat(rest[2]), int(rest[0]), seed=int(rest[0]) + 100 * int(rest[1])
            )
        else:
            figures = run_job(args.url, rest[0], date.fromisoformat(rest[2]), int(rest[1]))
        print(json.dumps(figures))
        return

    def step(*arguments: str) -> dict[str, float]:
        figures, _ = child(REPO, args.url, *arguments, options=("--rows", str(args.rows)), script=__file__)
        return figures

    table: dict[int, dict[str, list[dict[str, float]]]] = {}
    differences: dict[int, list[int]] = {}
    sizes = [1] + ([args.grow] if args.grow > 1 else [])
    if args.keep:
        loaded = {"rows": float(args.rows)}
        if count_rows(args.url) > 1.5 * args.rows:
            sizes = sizes[1:]
    else:
        print(f"loading {args.rows:,} rows ...", file=sys.stderr)
        loaded = step("load")
    for size in sizes:
        if size > 1 and not (args.keep and count_rows(args.url) > 1.5 * args.rows):
            print(f"growing the history {size}x ...", file=sys.stderr)
            step("grow", str(size), str(int(loaded["rows"])))
        rows = count_rows(args.url)
        first = latest_day(args.url).isoformat()  # no row waits for a later as-of at the first run
        for job in JOBS:
            step("job", job, "0", first)
        for night in range(1, args.nights + 1):
            step("add", str(night), str(size), first)
            order = list(JOBS) if night % 2 else list(reversed(JOBS))
            for job in order:
                figures = step("job", job, str(night), first)
                print(f"{rows:,} rows, night {night}, {job}: {figures}", file=sys.stderr)
                table.setdefault(rows, {}).setdefault(job, []).append(figures)
            differences.setdefault(rows, []).append(different_features(args.url, *JOBS.values()))

    print(f"\nmachine: {cpu_name()}, {os.cpu_count()} cores; PostgreSQL at {args.url.split('@')[-1]}")
    print(f"{args.nights} night(s) of {NIGHT_ROWS:,} new rows per size; seconds as median (range)")
    print(f"{'history':>12}  {'job':12}{'end to end':>20}{'run':>20}{'extract':>20}  customers recomputed")
    for rows, jobs in table.items():
        for job, measured in jobs.items():
            recomputed = [m["recomputed"] for m in measured if m["recomputed"] is not None]
            print(
                f"{rows:>12,}  {job:12}{summary([m['process_seconds'] for m in measured]):>20}"
                f"{summary([m['seconds'] for m in measured]):>20}"
                f"{summary([m['extract_seconds'] for m in measured]):>20}  "
                f"{f'{statistics.median(recomputed):,.0f}' if recomputed else 'all'} of {measured[0]['customers']:,}"
            )
        night, full = jobs["incremental"], jobs["full"]
        for measure in ("process_seconds", "seconds"):
            ratios = [a[measure] / b[measure] for a, b in zip(night, full, strict=True)]
            print(f"{'':14}incremental / full, {measure.replace('_', ' ')}: {summary(ratios)}")
        faster = [b["extract_seconds"] / a["extract_seconds"] for a, b in zip(night, full, strict=True)]
        print(f"{'':14}extract: full / incremental {summary(faster)}x")
        verdict = "identical" if not any(differences[rows]) else "DIFFERENT"
        print(f"{'':14}features: {verdict} ({max(differences[rows])} customers differ at most)")


if __name__ == "__main__":
    main()
