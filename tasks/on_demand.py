"""Work on demand beside the nightly run: one customer scored now with the stored model, and other
clustering algorithms compared with KMeans on the latest run's customers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from tasks.errors import ModelError, SegmentsError
from tasks.extract.features import extract_customer_features
from tasks.extract.result import default_as_of
from tasks.load.model_store import load_latest_model
from tasks.load.runs import record_algorithm_comparison
from tasks.model.naming import NO_NET_PURCHASES_ID, NO_NET_PURCHASES_NAME
from tasks.report.read import read_latest_run, read_segment_sample
from tasks.settings import SegmentSettings

COMPARE_SAMPLE_SIZE = 5_000


@dataclass(frozen=True)
class CustomerScore:
    """A customer's features as of a date and the segment the stored model gives them."""

    customer_id: str
    as_of: date
    features: dict[str, Any]
    segment_id: int
    segment_name: str
    model_version: int
    distance: float | None
    seconds: float


def score_customer(settings: SegmentSettings, customer_id: str, as_of: date | None = None) -> CustomerScore:
    """Compute ``customer_id``'s features as of ``as_of`` (default today, UTC) where the transactions are, then
    assign the nearest centroid of the latest stored model. Nothing is written.

    Raises :class:`ModelError` when no model is stored, :class:`EmptySourceError` when the customer has
    no usable rows.
    """
    started = time.perf_counter()
    stored = load_latest_model(settings)
    if stored is None:
        raise ModelError("no stored model yet; run `segments run` once before scoring customers")
    when = as_of or default_as_of()
    extract = extract_customer_features(settings, when, customer_id=customer_id)
    row = extract.features.iloc[0]
    features = {name: _plain(row[name]) for name in extract.features.columns if name != "customer_id"}
    if row["frequency"] == 0:
        segment_id, segment_name, distance = NO_NET_PURCHASES_ID, NO_NET_PURCHASES_NAME, None
    else:
        values = stored.model.transform(extract.features)
        index = int(stored.model.predict(extract.features)[0])
        distance = float(np.sqrt(((values[0] - stored.model.centroids[index]) ** 2).sum()))
        segment_id, segment_name = stored.segment_ids[index], stored.segment_names[index]
    return CustomerScore(
        customer_id=customer_id,
        as_of=when,
        features=features,
        segment_id=segment_id,
        segment_name=segment_name,
        model_version=stored.version,
        distance=distance,
        seconds=time.perf_counter() - started,
    )


def _plain(value: Any) -> Any:
    """A numpy or pandas scalar as a plain Python value; missing as ``None``."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def compare_latest_run(settings: SegmentSettings) -> list[dict[str, Any]]:
    """Fit KMeans, a Gaussian mixture, Ward clustering and DBSCAN on a sample of the latest successful
    run's customers, in its model's space, and keep the comparison on that run (the report shows it).
    KMeans stays the production model."""
    from tasks.model.compare import compare_algorithms  # scikit-learn's other algorithms

    latest = read_latest_run(settings)
    if latest.stored_model is None:
        raise SegmentsError(f"model version {latest.record.get('model_version')} of the latest run is not stored")
    model = latest.stored_model.model
    sample = read_segment_sample(settings, list(model.input_columns), COMPARE_SAMPLE_SIZE)
    comparison = compare_algorithms(model.transform(sample), model.n_clusters, settings.random_state)
    record_algorithm_comparison(settings, str(latest.record["run_id"]), comparison)
    return comparison
