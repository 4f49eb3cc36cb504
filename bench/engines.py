"""Engines benchmark: the same transactions aggregated by PostgreSQL (with the covering index of
`segments index --create`), and kept as Parquet files for DuckDB and Spark (``local[2]``, started in the
job's process), at each size asked for.

    uv run --extra spark python bench/engines.py --url postgresql+psycopg://postgres@127.0.0.1/postgres \\
        --rows 10000000 30000000 [--data-dir /tmp/bench-engines]

For each size and engine, in a child process of its own (its peak memory is its own): the extract alone
(features and row counts, Spark's start included), then the whole nightly run as a user starts it
(`segments run`, K fixed at 5 so that the model step is the same for all, outputs in PostgreSQL). The
features each engine computed are compared with PostgreSQL's: counts exact, money to the cent.
The data is generated once per size (seed 1) and kept in ``--data-dir`` and schema ``bench_engines_<N>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
AS_OF = date(2024, 3, 1)
LINES_PER_CUSTOMER = 11.4  # what tasks.synthetic produces on average
PARQUET_FILES = 8
ENGINES = {"postgresql": None, "duckdb": "duckdb://", "spark": "local[2]"}


def schema_of(rows: int) -> str:
    return f"bench_engines_{rows // 1_000_000}m"


def prepare(url: str, rows: int, data_dir: Path) -> Path:
    """The transactions of ``rows`` rows in PostgreSQL (with the covering index) and as Parquet files."""
    import sqlalchemy as sa
    from synthetic_shop import load_shop

    from tasks.extract.covering_index import create_covering_index
    from tasks.settings import load_settings
    from tasks.synthetic import generate_transactions

    folder = data_dir / f"transactions_{rows}"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        present = conn.execute(sa.text("select to_regclass(:t)"), {"t": f"{schema_of(rows)}.transactions"}).scalar()
    if present and folder.is_dir():
        return folder
    started = time.perf_counter()
    frame = generate_transactions(max(10, int(rows / LINES_PER_CUSTOMER)), AS_OF, seed=1)
    frame["amount"] = pd.to_numeric(frame["amount"])
    load_shop(engine, schema_of(rows), frame)
    engine.dispose()
    create_covering_index(
        load_settings(database_url=url, source_table=f"{schema_of(rows)}.transactions", order_id_column="order_id")
    )
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(frame) // PARQUET_FILES)
    for part in range(PARQUET_FILES):
        frame.iloc[part * size : (part + 1) * size].to_parquet(folder / f"part-{part:05d}.parquet", index=False)
    print(f"prepared {len(frame):,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder


def settings_env(url: str, rows: int, engine: str, folder: Path) -> dict[str, str]:
    """The environment a user sets for ``engine``'s run: outputs in PostgreSQL, one schema per engine."""
    environment = {
        "SEGMENTS_DATABASE_URL": url,
        "SEGMENTS_OUTPUT_SCHEMA": f"{schema_of(rows)}_{engine}",
        "SEGMENTS_ORDER_ID_COLUMN": "order_id",
        "SEGMENTS_N_CLUSTERS": "5",
        "SEGMENTS_AS_OF": AS_OF.isoformat(),
        "SEGMENTS_REPORT_PATH": "",
        "SEGMENTS_FORCE": "true",
    }
    if ENGINES[engine]:
        environment |= {"SEGMENTS_SOURCE_URL": str(ENGINES[engine]), "SEGMENTS_SOURCE_TABLE": str(folder)}
    else:
        environment["SEGMENTS_SOURCE_TABLE"] = f"{schema_of(rows)}.transactions"
    return environment


def extract_child(features_path: str) -> None:
    """In the child: the extract alone, its features saved for the comparison; prints its seconds."""
    from tasks.extract.features import extract_customer_features
    from tasks.settings import load_settings

    started = time.perf_counter()
    result = extract_customer_features(load_settings(), AS_OF)
    seconds = time.perf_counter() - started
    result.features.assign(customer_id=result.features["customer_id"].astype(str)).to_parquet(features_path)
    print(json.dumps({"seconds": seconds, "customers": len(result.features), "rows": result.counts.rows_scanned}))


def measured(command: list[str], environment: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command``; its wall seconds, peak memory (MB) and output."""
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - commands this script built
        command, cwd=REPO, env=os.environ | environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed ({status})")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, output


def differences(left: pd.DataFrame, right: pd.DataFrame) -> int:
    """Customers whose features differ: counts exact, money to the cent, missing on either side."""
    merged = left.merge(right, on="customer_id", how="outer", suffixes=("", "_other"), indicator=True)
    differ = merged["_merge"] != "both"
    for column in ("recency_days", "frequency", "tenure_days"):
        same = (merged[column] == merged[f"{column}_other"]) | (
            merged[column].isna() & merged[f"{column}_other"].isna()
        )
        differ |= ~same.fillna(False).astype(bool)
    differ |= (merged["monetary"].round(2) - merged["monetary_other"].round(2)).abs().fillna(1) > 0.005
    return int(differ.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url", default=os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 30_000_000])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bench-engines"))  # noqa: S108
    parser.add_argument("--child-extract", metavar="FEATURES_PATH")
    parser.add_argument("--child-prepare", type=int, metavar="ROWS")
    args = parser.parse_args()
    if args.child_extract:
        extract_child(args.child_extract)
        return
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    if args.child_prepare:
        print(prepare(args.url, args.child_prepare, args.data_dir))
        return

    results = []
    for rows in args.rows:
        # generated in a child of its own, so that this process stays small: a child forked from a big
        # parent would count the parent's pages in its own peak memory
        prepared = [sys.executable, __file__, "--url", args.url, "--data-dir", str(args.data_dir)]
        _, _, output = measured([*prepared, "--child-prepare", str(rows)], {"PYTHONPATH": str(REPO)})
        folder = Path(output.strip().splitlines()[-1])
        features: dict[str, pd.DataFrame] = {}
        for engine in ENGINES:
            environment = settings_env(args.url, rows, engine, folder)
            path = args.data_dir / f"features_{rows}_{engine}.parquet"
            seconds, peak, output = measured(
                [sys.executable, __file__, "--child-extract", str(path)], environment | {"PYTHONPATH": str(REPO)}
            )
            extract = json.loads(output.strip().splitlines()[-1])
            features[engine] = pd.read_parquet(path)
            run_seconds, run_peak, _ = measured([str(Path(sys.executable).parent / "segments"), "run"], environment)
            results.append(
                {
                    "rows": extract["rows"],
                    "customers": extract["customers"],
                    "engine": engine,
                    "extract_s": extract["seconds"],
                    "extract_process_s": seconds,
                    "extract_peak_mb": peak,
                    "run_s": run_seconds,
                    "run_peak_mb": run_peak,
                    "differing_customers": differences(features["postgresql"], features[engine]),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)

    table = pd.DataFrame(results)
    print(
        f"\nMachine: {os.cpu_count()} cores. Extract: features and row counts in one process (Spark's start included)."
    )
    print(
        "| rows | customers | engine | extract (s) | `segments run` end to end (s) | peak MB (run) "
        "| MB per 1k customers | features differing |"
    )
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in table.itertuples():
        print(
            f"| {row.rows:,} | {row.customers:,} | {row.engine} | {row.extract_s:.2f} | {row.run_s:.2f} | "
            f"{row.run_peak_mb:.0f} | {1000 * row.run_peak_mb / row.customers:.2f} | {row.differing_customers} |"
        )
    sizes = sorted(table["rows"].unique())
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]

        def figure(engine: str, size: int, column: str) -> float:
            return float(table[(table["engine"] == engine) & (table["rows"] == size)][column].iloc[0])

        print(
            f"\nAt {large:,} rows: PostgreSQL's extract / DuckDB's = "
            f"{figure('postgresql', large, 'extract_s') / figure('duckdb', large, 'extract_s'):.1f}x (target >= 5x)"
        )
        for column, what in (("extract_s", "extract"), ("run_s", "end to end")):
            ratio = figure("spark", large, column) / figure("spark", small, column)
            print(f"Spark {what}, {large:,} / {small:,} rows: {ratio:.2f}x (target <= 3.3x)")


if __name__ == "__main__":
    main()
