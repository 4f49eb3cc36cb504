"""The run's input: transaction features (in one query or in customer partitions), with customer
attributes joined, or the customer table alone."""

from __future__ import annotations

from datetime import date

from tasks.extract.attributes import extract_attributes_only, join_attributes
from tasks.extract.features import extract_customer_features
from tasks.extract.incremental import extract_with_state
from tasks.extract.partitions import PartitionRunner, extract_in_partitions, partitions_in_threads
from tasks.extract.result import ExtractResult
from tasks.settings import SegmentSettings


def extract_run_input(
    settings: SegmentSettings, as_of: date, run_partitions: PartitionRunner = partitions_in_threads
) -> ExtractResult:
    """Transaction features, with customer attributes joined when the features name customer-table
    columns, or the customer table alone when there is no source table. With ``settings.partitions``
    above 1 the aggregation runs in customer partitions, run by ``run_partitions`` (threads of this
    process unless the flow passes its Dask runner). With a change column, the extract of
    :mod:`tasks.extract.incremental`, in one query."""
    if settings.attributes_only:
        return extract_attributes_only(settings, as_of)
    if settings.keeps_state:  # one query: a night reads few customers (tasks/extract/incremental.py)
        extract = extract_with_state(settings, as_of)
    elif settings.partitions > 1:
        extract = extract_in_partitions(settings, as_of, run_partitions)
    else:
        extract = extract_customer_features(settings, as_of)
    return join_attributes(extract, settings) if settings.attribute_features else extract
