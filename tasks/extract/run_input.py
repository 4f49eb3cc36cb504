"""The run's input: transaction features (in full or, with a change column, an incremental night), with
customer attributes joined, or the customer table alone."""

from __future__ import annotations

from datetime import date

from tasks.extract.attributes import extract_attributes_only, join_attributes
from tasks.extract.features import extract_customer_features
from tasks.extract.incremental import extract_with_state
from tasks.extract.result import ExtractResult
from tasks.settings import SegmentSettings


def extract_run_input(settings: SegmentSettings, as_of: date) -> ExtractResult:
    """Transaction features, with customer attributes joined when the features name customer-table
    columns, or the customer table alone when there is no source table. With a change column, the
    extract of :mod:`tasks.extract.incremental`."""
    if settings.attributes_only:
        return extract_attributes_only(settings, as_of)
    extract = (
        extract_with_state(settings, as_of) if settings.keeps_state else extract_customer_features(settings, as_of)
    )
    return join_attributes(extract, settings) if settings.attribute_features else extract
