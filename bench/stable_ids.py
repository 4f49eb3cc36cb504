"""How many customers keep their segment id when the model is refitted on slightly changed data?

Two consecutive refits (different KMeans seeds) on a shop's transactions and on a copy with 1% of rows
dropped and amounts jittered by up to 2%: the share of customers whose segment id is the same, for
three ways of naming clusters:

- raw KMeans labels (what notebooks store),
- ids ordered by segment value (1 = most valuable), without matching,
- ids matched to the previous model's centroids (``linear_sum_assignment``), as the product does.

Run: ``uv run python bench/stable_ids.py [--customers 20000] [--trials 5]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.demo import load_demo_transactions
from tasks.extract.features import extract_customer_features
from tasks.model.fit import fit_segment_model
from tasks.model.lifecycle import StoredModel, psi_reference
from tasks.model.matching import match_segments
from tasks.model.naming import cluster_means, fresh_segment_labels, grid_names
from tasks.model.scores import with_scores
from tasks.settings import load_settings

AS_OF = date(2024, 3, 1)
FEATURES = ("recency_days", "frequency", "monetary")


def features_of(path: Path, perturb_seed: int | None) -> pd.DataFrame:
    settings = load_settings(database_url=f"sqlite:///{path}", order_id_column="order_id")
    if perturb_seed is not None:
        import sqlalchemy as sa

        engine = sa.create_engine(settings.database_url.get_secret_value())
        with engine.begin() as conn:
            rng = np.random.default_rng(perturb_seed)
            rows = pd.read_sql("select rowid, amount from transactions", conn)
            drop = rows["rowid"][rng.uniform(size=len(rows)) < 0.01].tolist()
            conn.execute(sa.text("delete from transactions where rowid = :r"), [{"r": r} for r in drop])
            jitter = rng.uniform(0.98, 1.02, len(rows))
            conn.execute(
                sa.text("update transactions set amount = round(amount * :f, 2) where rowid = :r"),
                [{"f": float(f), "r": int(r)} for f, r in zip(jitter, rows["rowid"], strict=True)],
            )
        engine.dispose()
    return extract_customer_features(settings, AS_OF).features


def fit(purchasers: pd.DataFrame, k: int, seed: int):
    return fit_segment_model(
        purchasers,
        FEATURES,
        n_clusters=k,
        k_min=2,
        k_max=10,
        sample_size=200_000,
        winsorize_quantile=0.99,
        random_state=seed,
    )


def kept_share(a: pd.Series, b: pd.Series) -> float:
    common = a.index.intersection(b.index)
    return float((a.loc[common] == b.loc[common]).mean())


def trial(customers: int, seed: int, k: int, k_second: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        base, changed = Path(folder) / "base.db", Path(folder) / "changed.db"
        load_demo_transactions(base, customers=customers, as_of=AS_OF, seed=seed)
        load_demo_transactions(changed, customers=customers, as_of=AS_OF, seed=seed)
        first_features = features_of(base, None)
        second_features = features_of(changed, perturb_seed=seed)
    first_purchasers = first_features.loc[first_features["frequency"] > 0]
    second_purchasers = second_features.loc[second_features["frequency"] > 0]
    first, second = fit(first_purchasers, k, seed=1000 + seed), fit(second_purchasers, k_second, seed=2000 + seed)
    index_a, index_b = first_purchasers["customer_id"], second_purchasers["customer_id"]

    raw_a, raw_b = pd.Series(first.labels, index=index_a), pd.Series(second.labels, index=index_b)
    ids_a, names_a = fresh_segment_labels(cluster_means(with_scores(first_features), first.labels, k))
    means_b = cluster_means(with_scores(second_features), second.labels, k_second)
    ids_b, _ = fresh_segment_labels(means_b)
    ordered_a = raw_a.map(dict(enumerate(ids_a)))
    ordered_b = raw_b.map(dict(enumerate(ids_b)))
    previous = StoredModel(
        version=1,
        model=first.model,
        winsorize_quantile=0.99,
        segment_ids=ids_a,
        segment_names=names_a,
        next_segment_id=k + 1,
        psi_reference=psi_reference(first.model.transform(first_purchasers), FEATURES),
        trained_as_of=AS_OF,
        training_run_id="bench",
    )
    match = match_segments(second.model, previous, grid_names(means_b))
    matched_b = raw_b.map(dict(enumerate(match.segment_ids)))
    return {
        "raw KMeans labels": kept_share(raw_a, raw_b),
        "value-ordered ids, no matching": kept_share(ordered_a, ordered_b),
        "matched to previous centroids": kept_share(ordered_a, matched_b),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--k", type=int, default=5, help="segments of the first model")
    args = parser.parse_args()
    for k_second in (args.k, args.k + 1):
        started = time.perf_counter()
        results = pd.DataFrame([trial(args.customers, seed, args.k, k_second) for seed in range(args.trials)])
        print(
            f"\nCustomers keeping their segment id across two refits on slightly perturbed data, K {args.k} -> "
            f"{k_second} ({args.customers:,} customers, {args.trials} trials, {time.perf_counter() - started:.0f} s):"
        )
        print(results.agg(["mean", "min", "max"]).T.map(lambda share: f"{share:.1%}").to_string())


if __name__ == "__main__":
    main()
