"""Segments a marketer can trust, measured on the demo generator's planted behaviour groups: for each
seed, the demo's transactions go through the product's extract (SQLite) and model step with the
default settings, and the segments are held against the groups the generator planted.

    uv run python bench/segment_quality.py [--seeds 1 2 3 4 5] [--customers 3000]

Printed per seed: K, the adjusted Rand index against the planted groups, every segment's name,
purity (share of members of whom its name is true) and stability (mean bootstrap Jaccard), and any
planted group whose majority sits under a name that contradicts it. Targets: ARI >= 0.6, every
purity >= 70%, no contradiction, K between 4 and 8, every stability >= 0.75.

So that the rule is not judged only on the data it was designed with, the same seeds also run on
retail-shaped data with no planted groups (half the customers bought once, log-normal spend, a
quarter of the rows guest checkouts): K, purity and stability are printed for it too.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.metrics import adjusted_rand_score

from tasks.demo import load_demo_transactions
from tasks.extract.features import extract_customer_features
from tasks.model.step import segment_features
from tasks.settings import load_settings
from tasks.synthetic import planted_groups

AS_OF = date(2026, 12, 6)
# A planted group's majority must not sit under these names, nor under a name claiming the opposite.
CONTRADICTIONS = {
    "at_risk": ({"Champions", "Loyal"}, ("recency:recent",)),
    "new": ({"Lost", "Hibernating"}, ("recency:lapsed", "recency:lapsing", "frequency:frequent")),
    "one_time": ({"Champions", "Loyal"}, ("frequency:frequent",)),
    "champions": ({"Lost", "Hibernating", "At Risk"}, ("recency:lapsed", "frequency:one-time")),
}


def retail_shaped_transactions(customers: int, seed: int) -> pd.DataFrame:
    """Transactions shaped like a public retail export, with no groups planted: half the customers
    bought once, order counts with a long tail, log-normal basket values, a few refunds, and a
    quarter of the rows guest checkouts."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(0, 720, customers)
    orders = 1 + rng.geometric(0.35, customers) * (rng.random(customers) < 0.5)
    rows = []
    for index in range(customers):
        days = np.sort(rng.uniform(0, first[index], orders[index]))[::-1] if orders[index] > 1 else [first[index]]
        for number, day in enumerate(days):
            amount = round(float(rng.lognormal(3.5, 0.9)), 2) * (-1 if rng.random() < 0.03 else 1)
            rows.append((f"R{index:06d}", f"R{index:06d}-{number}", AS_OF.toordinal() - 1 - day, amount))
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "day", "amount"])
    guests = frame.sample(frac=1 / 3, random_state=seed).assign(customer_id=None)  # a quarter of all rows
    frame = pd.concat([frame, guests.assign(order_id="guest-" + guests["order_id"])], ignore_index=True)
    frame["occurred_at"] = [datetime.fromordinal(int(day)) for day in frame.pop("day")]
    return frame


def measure(seed: int, customers: int, shape: str) -> dict[str, object]:
    path = Path(tempfile.mkdtemp()) / "demo.db"
    load_demo_transactions(path, customers=customers, as_of=AS_OF, seed=seed)
    if shape == "retail":
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.exec_driver_sql("delete from transactions")
            retail_shaped_transactions(customers, seed).to_sql("transactions", conn, if_exists="append", index=False)
        engine.dispose()
    settings = load_settings(database_url=f"sqlite:///{path}", order_id_column="order_id", as_of=AS_OF)
    features = extract_customer_features(settings, AS_OF).features
    outcome = segment_features(
        features, AS_OF, settings, run_id=f"seed-{seed}", scored_at=datetime.now(UTC), stored=None
    )
    profiles = outcome.segments.profiles.set_index("segment_id").drop(index=0, errors="ignore")
    result: dict[str, object] = {"seed": seed, "K": outcome.n_clusters, "profiles": profiles}
    if shape == "retail":
        return result
    assignments = outcome.segments.assignments.set_index("customer_id")
    truth = planted_groups(customers, seed).reindex(assignments.index.astype(str))
    clustered = assignments["segment_id"] != 0
    result["ARI"] = adjusted_rand_score(truth[clustered], assignments.loc[clustered, "segment_id"])
    assert outcome.new_model is not None
    claims = dict(zip(outcome.new_model.segment_names, outcome.new_model.segment_claims, strict=True))
    contradictions = []
    for group, (names, opposite) in CONTRADICTIONS.items():
        majority = assignments.loc[truth == group, "segment_name"].value_counts().index[0]
        if majority in names or set(claims.get(majority, ())) & set(opposite):
            contradictions.append(f"{group} -> {majority}")
    result["contradictions"] = contradictions
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--customers", type=int, default=3000)
    args = parser.parse_args()
    for shape in ("demo", "retail"):
        _print_table(shape, [measure(seed, args.customers, shape) for seed in args.seeds])


def _print_table(shape: str, results: list[dict[str, object]]) -> None:
    print(f"\n== {shape} data ==")
    rows = []
    for result in results:
        profiles = result["profiles"]
        assert isinstance(profiles, pd.DataFrame)
        ari = f", adjusted Rand index {result['ARI']:.2f}" if "ARI" in result else ""
        print(f"\nseed {result['seed']}: K={result['K']}{ari}")
        for segment_id, profile in profiles.iterrows():
            print(
                f"  {segment_id:>3} {profile['segment_name']:<44} {profile['share']:6.1%}  "
                f"purity {profile['purity']:.0%}  stability {profile['stability']:.2f}"
            )
        contradictions = result.get("contradictions") or []
        assert isinstance(contradictions, list)
        if contradictions:
            print("  contradictions: " + "; ".join(contradictions))
        row = {
            "seed": result["seed"],
            "K": result["K"],
            "min purity": f"{profiles['purity'].min():.0%}",
            "min stability": round(float(profiles["stability"].min()), 2),
        }
        if "ARI" in result:
            row |= {"ARI": round(float(result["ARI"]), 2), "contradictions": len(contradictions)}  # type: ignore[arg-type]
        rows.append(row)
    print(f"\n{shape} data; targets: K 4-8, every purity >= 70%, every stability >= 0.75", end="")
    print(", ARI >= 0.6, no contradiction" if shape == "demo" else " (no planted groups: no ARI)")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
