"""Model lifecycle on SQLite and PostgreSQL: reuse, drift, stable ids, history, stored models."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.errors import ModelError
from tasks.model.lifecycle import StoredModel
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic, read, run_once, write_transactions


def segments_by_customer(backend: Backend) -> pd.Series:
    return read(backend, "customer_segments", "customer_id").set_index("customer_id")["segment_id"]


def latest_run(backend: Backend) -> pd.Series:
    return read(backend, "segment_runs", "started_at").iloc[-1]


def scale_amounts(backend: Backend, factor: float) -> None:
    with backend.engine().begin() as conn:
        conn.execute(sa.text(f"update {backend.table('transactions')} set amount = amount * :f"), {"f": factor})


def test_reuse_scores_exactly_like_the_run_that_fitted(backend: Backend) -> None:
    load_synthetic(backend)
    run_once(backend)
    fitted = segments_by_customer(backend)

    run_once(backend, model_policy="reuse")

    pd.testing.assert_series_equal(segments_by_customer(backend), fitted)
    run = latest_run(backend)
    assert run["model_action"] == "reuse" and run["model_version"] == "1"
    assert len(read(backend, "segment_models")) == 1


def test_without_drift_auto_reuses_the_model(backend: Backend) -> None:
    load_synthetic(backend)
    run_once(backend)

    run_once(backend, as_of=AS_OF + timedelta(days=1))

    run = latest_run(backend)
    assert run["model_action"] == "reuse", run["model_reason"]
    assert run["model_reason"].startswith("no drift")
    drift = run["drift"] if isinstance(run["drift"], dict) else json.loads(run["drift"])
    assert max(drift["psi"].values()) < 0.25 and drift["inertia_ratio"] < 1.25


def test_injected_drift_triggers_a_refit_with_its_reason(backend: Backend) -> None:
    load_synthetic(backend)
    run_once(backend)
    scale_amounts(backend, 20.0)  # every customer now spends twenty times as much

    run_once(backend, as_of=AS_OF + timedelta(days=1))

    run = latest_run(backend)
    assert run["model_action"] == "refit"
    assert "PSI of monetary" in run["model_reason"]
    assert run["model_version"] == "2"
    assert len(read(backend, "segment_models")) == 2


def test_an_old_model_or_changed_features_are_refitted(backend: Backend) -> None:
    load_synthetic(backend)
    run_once(backend)

    run_once(backend, as_of=AS_OF + timedelta(days=45))
    assert "45 days old (max 30)" in latest_run(backend)["model_reason"]

    run_once(backend, as_of=AS_OF + timedelta(days=45), features="recency_days,monetary")
    assert "features recency_days,frequency,monetary -> recency_days,monetary" in latest_run(backend)["model_reason"]
    with pytest.raises(ModelError, match="differs: features"):
        run_once(backend, as_of=AS_OF + timedelta(days=46), model_policy="reuse")


def test_reuse_without_a_model_is_a_clear_error(backend: Backend) -> None:
    load_synthetic(backend)

    with pytest.raises(ModelError, match="no model is stored yet"):
        run_once(backend, model_policy="reuse")


def perturbed_copy(backend: Backend, seed: int) -> None:
    """Slightly different data: 1% of rows dropped, amounts jittered by up to 2%."""
    rows = read(backend, "transactions", "order_id, occurred_at")
    rows["occurred_at"] = pd.to_datetime(rows["occurred_at"])  # SQLite returns text
    rng = np.random.default_rng(seed)
    rows = rows.loc[rng.uniform(size=len(rows)) > 0.01].copy()
    amounts = pd.to_numeric(rows["amount"], errors="coerce")
    rows["amount"] = (amounts * rng.uniform(0.98, 1.02, len(rows))).round(2)
    write_transactions(backend, rows)


def test_segment_ids_survive_a_refit_on_slightly_changed_data(backend: Backend) -> None:
    load_synthetic(backend, customers=600, seed=8)
    run_once(backend, n_clusters=4)
    before = segments_by_customer(backend)
    names_before = read(backend, "segment_profiles").set_index("segment_id")["segment_name"]
    perturbed_copy(backend, seed=1)

    run_once(backend, n_clusters=4, model_policy="refit", random_state=7)

    after = segments_by_customer(backend)
    common = before.index.intersection(after.index)
    kept = (before.loc[common] == after.loc[common]).mean()
    assert kept >= 0.9, f"only {kept:.0%} kept their segment id"
    names_after = read(backend, "segment_profiles", "run_id").drop_duplicates("segment_id", keep="last")
    names_after = names_after.set_index("segment_id")["segment_name"]
    for segment_id in set(names_before.index) & set(names_after.index):
        assert names_after[segment_id] == names_before[segment_id]  # matched segments keep their name
    changes = latest_run(backend)["segment_changes"]
    changes = changes if isinstance(changes, dict) else json.loads(changes)
    assert sorted(changes["kept"]) == [1, 2, 3, 4] and changes["new"] == [] and changes["retired"] == []


def test_a_refit_a_week_later_keeps_k_and_counts_who_moved_only_because_of_it(backend: Backend) -> None:
    load_synthetic(backend, customers=800, seed=11)
    week_before = AS_OF - timedelta(days=7)
    run_once(backend, as_of=week_before)
    first = latest_run(backend)
    before = segments_by_customer(backend)

    run_once(backend, model_policy="refit")

    run = latest_run(backend)
    assert run["model_action"] == "refit" and run["n_clusters"] == first["n_clusters"], run["k_reason"]
    assert f"K={first['n_clusters']}" in run["k_reason"]
    # Independently: customers whose segment changed, and of them those whom the previous model
    # (as stored) still puts, on tonight's features, in the segment they left
    rows = read(backend, "customer_segments", "customer_id").set_index("customer_id")
    common = before.index.intersection(rows.index)
    moved = common[(before.loc[common] != rows.loc[common, "segment_id"]).to_numpy()]
    stored = read(backend, "segment_models", "model_version")
    previous = StoredModel.from_dict(
        json.loads(stored.iloc[0]["model"]) if isinstance(stored.iloc[0]["model"], str) else stored.iloc[0]["model"]
    )
    clustered = rows.loc[moved]
    clustered = clustered[clustered["frequency"] > 0]
    under_previous = np.asarray(previous.segment_ids)[previous.model.predict(clustered.reset_index())]
    by_refit = int((under_previous == before.loc[clustered.index].to_numpy()).sum())
    assert run["customers_moved"] == len(moved) > 0
    assert run["moved_by_refit"] == by_refit
    assert by_refit <= 0.03 * len(rows), f"{by_refit} of {len(rows)} customers moved by the refit alone"
    assert len(moved) <= 0.05 * len(common)
    # a night that reuses the model has no refit to blame
    run_once(backend, as_of=AS_OF + timedelta(days=1), model_policy="reuse")
    assert pd.isna(latest_run(backend)["moved_by_refit"]) and latest_run(backend)["customers_moved"] >= 0


def history(backend: Backend) -> pd.DataFrame:
    return read(backend, "customer_segment_history", "customer_id, valid_from")


def assert_history_matches_assignments(backend: Backend) -> None:
    rows = history(backend)
    open_rows = rows[rows["valid_to"].isna()].set_index("customer_id")
    assert open_rows.index.is_unique
    current = read(backend, "customer_segments").set_index("customer_id")
    assert set(open_rows.index) == set(current.index)
    assert (open_rows.loc[current.index, "segment_id"] == current["segment_id"]).all()


def test_history_gets_a_row_only_when_a_segment_changes(backend: Backend) -> None:
    load_synthetic(backend, customers=400, seed=9)
    run_once(backend)
    first = history(backend)
    assert len(first) == len(read(backend, "customer_segments"))
    assert_history_matches_assignments(backend)

    run_once(backend)  # the same date again: idempotent
    pd.testing.assert_frame_equal(history(backend).drop(columns="run_id"), first.drop(columns="run_id"))

    next_day = AS_OF + timedelta(days=200)  # half a year later, with the same model: some customers move
    before = segments_by_customer(backend)
    run_once(backend, as_of=next_day, model_policy="reuse")
    after = segments_by_customer(backend)
    moved = int((before != after.loc[before.index]).sum())
    assert moved > 0
    rows = history(backend)
    assert len(rows) == len(first) + moved
    assert (rows["valid_from"].astype(str) == next_day.isoformat()).sum() == moved
    assert (rows["valid_to"].astype(str) == next_day.isoformat()).sum() == moved
    assert_history_matches_assignments(backend)

    transitions = read(backend, "segment_transitions")
    assert transitions["customers"].sum() == len(after)
    changed = transitions[transitions["from_segment_id"] != transitions["to_segment_id"]]
    assert changed["customers"].sum() == moved
    assert set(transitions["to_as_of"].astype(str)) == {next_day.isoformat()}


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ({"format_version": 99}, "format version 99"),
        ({"segment_ids": [1]}, "malformed"),
        (
            {
                "model": {
                    "format_version": 1,
                    "features": ["recency_days"],
                    "caps": [1],
                    "means": [0],
                    "scales": [1],
                    "centroids": [[1, 2]],
                    "log_features": [],
                    "random_state": 0,
                }
            },
            "malformed",
        ),
    ],
)
def test_a_corrupted_model_row_fails_with_a_clear_message(backend: Backend, corruption: dict, message: str) -> None:
    load_synthetic(backend)
    run_once(backend)
    model = read(backend, "segment_models")["model"].iloc[0]
    model = (model if isinstance(model, dict) else json.loads(model)) | corruption
    assert "centroids" in model["model"] or "centroids" in corruption.get("model", {})  # stored as JSON data
    with backend.engine().begin() as conn:
        conn.execute(sa.text(f"update {backend.table('segment_models')} set model = :m"), {"m": json.dumps(model)})

    with pytest.raises(ModelError, match=message):
        run_once(backend, as_of=AS_OF + timedelta(days=1))


def test_a_stored_model_is_only_ever_parsed_as_json(backend: Backend, tmp_path) -> None:
    """A row holding a pickle (here one that would create a file when unpickled) is refused as data."""
    import base64
    import pickle

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(tmp_path / "pwned"), "w"))

    load_synthetic(backend)
    run_once(backend)
    payload = base64.b64encode(pickle.dumps(Exploit())).decode()
    with backend.engine().begin() as conn:
        conn.execute(
            sa.text(f"update {backend.table('segment_models')} set model = :m"),
            {"m": json.dumps({"format_version": 1, "pickle": payload})},
        )

    with pytest.raises(ModelError, match="malformed"):
        run_once(backend, as_of=AS_OF + timedelta(days=1))
    assert not (tmp_path / "pwned").exists()


def members_on(rows: pd.DataFrame, day: str) -> pd.DataFrame:
    """Each customer's segment on ``day``: the history row that holds it (the definition, in pandas)."""
    valid = (rows["valid_from"] <= day) & (rows["valid_to"].isna() | (rows["valid_to"] > day))
    return rows.loc[valid, ["customer_id", "segment_id", "segment_name"]]


def transitions_by_definition(rows: pd.DataFrame, from_day: str | None, to_day: str) -> set[tuple]:
    """Every customer's segment on the earlier date joined with their segment on the later one, counted."""
    before = members_on(rows, from_day) if from_day else rows.iloc[0:0][["customer_id", "segment_id", "segment_name"]]
    joined = before.merge(members_on(rows, to_day), on="customer_id", how="outer", suffixes=("_from", "_to"))
    keys = ["segment_id_from", "segment_name_from", "segment_id_to", "segment_name_to"]
    counted = joined.groupby(keys, dropna=False).size()
    return {
        (
            *(
                None if pd.isna(value) else (int(value) if "id" in key else value)
                for key, value in zip(keys, group, strict=True)
            ),
            n,
        )
        for group, n in counted.items()
    }


def replace_rows(conn: sa.Connection, backend: Backend, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Empty an output table and insert ``rows`` (tuples of ``columns``' values) as bound parameters."""
    conn.execute(sa.text(f"delete from {backend.table(table)}"))
    names = ", ".join(columns)
    placeholders = ", ".join(f":{column}" for column in columns)
    conn.execute(
        sa.text(f"insert into {backend.table(table)} ({names}) values ({placeholders})"),
        [dict(zip(columns, row, strict=True)) for row in rows],
    )


def test_transitions_count_each_customer_between_the_two_latest_successful_dates(backend: Backend) -> None:
    load_synthetic(backend, customers=60)
    run_once(backend)  # creates the outputs and the view
    days = [(AS_OF + timedelta(days=offset)).isoformat() for offset in (0, 10, 20, 30)]
    d0, d1, d2, d3 = days
    # customer, segment, name, valid from, valid to
    rows = [
        ("stayed", 1, "Champions", d0, None),
        ("moved", 1, "Champions", d0, d2),
        ("moved", 2, "Loyal", d2, None),
        ("moved before", 2, "Loyal", d0, d1),
        ("moved before", 3, "Lost", d1, None),
        ("new", 2, "Loyal", d2, None),
        ("gone", 3, "Lost", d0, d2),
        ("gone before", 2, "Loyal", d0, d1),
        ("entered, then moved", 4, "Hibernating", d1, d2),
        ("entered, then moved", 5, "At Risk", d2, None),
        ("renamed", 1, "Champions", d0, d2),
        ("renamed", 1, "Champions (renamed)", d2, None),
        ("closed later", 2, "Loyal", d0, d3),  # by a run after the later date (its rows, not its date)
    ]
    runs = [("r0", d0, "succeeded"), ("r1", d1, "succeeded"), ("r1-old", d1, "superseded"), ("r2", d2, "succeeded")]
    runs.append(("r3", d3, "failed"))  # not a date of the view
    history_columns = ["customer_id", "segment_id", "segment_name", "valid_from", "valid_to"]
    with backend.engine().begin() as conn:
        replace_rows(conn, backend, "customer_segment_history", [*history_columns, "run_id"], [(*r, "r") for r in rows])
        replace_rows(
            conn,
            backend,
            "segment_runs",
            ["run_id", "as_of", "started_at", "status"],
            [(r, a, AS_OF, s) for r, a, s in runs],
        )
    history_rows = pd.DataFrame(rows, columns=history_columns)

    def view() -> tuple[set[tuple], set[tuple[str | None, str]]]:
        frame = read(backend, "segment_transitions")
        dates = {
            (None if pd.isna(start) else str(start)[:10], str(end)[:10])
            for start, end in zip(frame["from_as_of"], frame["to_as_of"], strict=True)
        }
        counted = {
            (
                None if pd.isna(row.from_segment_id) else int(row.from_segment_id),
                None if pd.isna(row.from_segment_name) else row.from_segment_name,
                None if pd.isna(row.to_segment_id) else int(row.to_segment_id),
                None if pd.isna(row.to_segment_name) else row.to_segment_name,
                int(row.customers),
            )
            for row in frame.itertuples()
        }
        return counted, dates

    counted, dates = view()
    assert dates == {(d1, d2)}
    assert counted == transitions_by_definition(history_rows, d1, d2)
    assert counted == {
        (1, "Champions", 1, "Champions", 1),  # stayed
        (1, "Champions", 2, "Loyal", 1),  # moved
        (3, "Lost", 3, "Lost", 1),  # moved before the earlier date
        (None, None, 2, "Loyal", 1),  # new
        (3, "Lost", None, None, 1),  # gone
        (4, "Hibernating", 5, "At Risk", 1),
        (1, "Champions", 1, "Champions (renamed)", 1),
        (2, "Loyal", 2, "Loyal", 1),  # closed later
    }

    with backend.engine().begin() as conn:  # one successful date so far: everyone is new
        conn.execute(sa.text(f"delete from {backend.table('segment_runs')} where run_id in ('r0', 'r1')"))
    counted, dates = view()
    assert dates == {(None, d2)}
    assert counted == transitions_by_definition(history_rows, None, d2)
    assert sum(customers for *_, customers in counted) == 7
