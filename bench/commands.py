"""The README's commands timed as a person runs them: whole processes through ``uv run``, for this
checkout and, in the same run, a baseline commit (``--baseline REF``, a git worktree with its own
environment from its own lock file).

    uv run python bench/commands.py --baseline 320add1 [--repeat 3]

Each code gets a scratch folder of its own, with PYTHONDONTWRITEBYTECODE set and PREFECT_API_URL unset
as on a fresh machine: ``segments demo`` twice (a first and a second run), then ``score``, ``export``,
``report`` and ``migrate`` on the demo's data. Then a run on CDNOW-sized data: retail-shaped
transactions of 23,570 customers (about 76,000 rows, a quarter of them guest checkouts; see
``bench/segment_quality.py``) written as a CSV, loaded with ``segments load-csv`` into an SQLite file
and segmented with ``segments run`` (a first run: K chosen automatically).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CDNOW_CUSTOMERS = 23_570
RETAIL = {"SEGMENTS_DATABASE_URL": "sqlite:///retail.db", "SEGMENTS_ORDER_ID_COLUMN": "order_id"}
COMMANDS = {
    "demo (first run)": ["demo"],
    "demo (second run)": ["demo"],
    "score": ["score", "--customer-id", "C000042"],
    "export": ["export", "--format", "csv", "--output", "segments.csv"],
    "report": ["report", "--output", "report.html"],
    "migrate": ["migrate"],
}
RETAIL_COMMANDS = {
    "load-csv (76k rows)": ["load-csv", "retail.csv", "--table", "transactions"],
    "run on CDNOW-sized data": ["run", "--as-of", "2026-12-06"],
}


def timed(code: Path, folder: Path, arguments: list[str], settings: dict[str, str] | None = None) -> float:
    """Seconds of one ``uv run segments ...`` in ``folder`` with the project at ``code``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("SEGMENTS_", "PREFECT_"))}
    environment |= {"PYTHONDONTWRITEBYTECODE": "1", "PREFECT_HOME": str(folder / ".prefect"), "COLUMNS": "80"}
    environment |= settings or {}
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - uv with arguments of this script
        ["uv", "run", "--quiet", "--project", str(code), "segments", *arguments],  # noqa: S607
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"segments {' '.join(arguments)} of {code} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REF", help="a commit to time beside this checkout")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the commands after the demo")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from segment_quality import retail_shaped_transactions

    scratch = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    retail = retail_shaped_transactions(CDNOW_CUSTOMERS, seed=1)
    codes = {"this checkout": REPO}
    baseline = None
    if args.baseline:
        baseline = scratch / f"baseline-{args.baseline}"
        add = ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline]
        subprocess.run(add, check=True)  # noqa: S603
        codes[f"baseline {args.baseline}"] = baseline
    times: dict[str, dict[str, list[float]]] = {name: {} for name in codes}
    try:
        for code in codes.values():
            subprocess.run(["uv", "sync", "--quiet", "--locked", "--project", str(code)], check=True)  # noqa: S603, S607
        for round_number in range(args.repeat):
            for name, code in codes.items():
                folder = scratch / f"{name.replace(' ', '-')}-{round_number}"
                folder.mkdir()
                for label, arguments in COMMANDS.items():
                    times[name].setdefault(label, []).append(timed(code, folder, arguments))
                shop = folder / "retail"
                shop.mkdir()
                retail.to_csv(shop / "retail.csv", index=False)
                for label, arguments in RETAIL_COMMANDS.items():
                    times[name].setdefault(label, []).append(timed(code, shop, arguments, RETAIL))
    finally:
        if baseline is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)  # noqa: S603, S607

    print(f"\nwall seconds through `uv run`, median of {args.repeat} (PYTHONDONTWRITEBYTECODE=1, no PREFECT_API_URL)")
    print(f"{'command':22}" + "".join(f"{name:>26}" for name in times))
    print(f"CDNOW-sized data: {len(retail):,} rows of {CDNOW_CUSTOMERS:,} customers")
    for label in [*COMMANDS, *RETAIL_COMMANDS]:
        print(f"{label:22}" + "".join(f"{statistics.median(runs[label]):>26.2f}" for runs in times.values()))


if __name__ == "__main__":
    main()
