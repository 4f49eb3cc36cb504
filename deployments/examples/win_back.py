"""An example follow-up of the nightly segmentation: a win-back campaign started by the event
``segments.run.completed`` (see ``win-back.yaml``) when more than ``min_customers`` customers left
Champions that night. Replace the body with a call to your mail or CRM tool."""

from __future__ import annotations

from prefect import flow, get_run_logger


@flow(name="win-back-champions")
def win_back(left: int, as_of: str, run_id: str, min_customers: int = 100) -> bool:
    """Start the campaign when ``left`` (customers who left Champions in the segmentation run
    ``run_id`` as of ``as_of``) is more than ``min_customers``; returns whether it started. The
    customers themselves are those whose ``previous_segment_name`` is Champions and ``segment_since``
    is ``as_of`` in ``customer_segments``."""
    logger = get_run_logger()
    if left <= min_customers:
        logger.info("%s customers left Champions as of %s (at most %s): no campaign", left, as_of, min_customers)
        return False
    logger.info("%s customers left Champions as of %s (run %s): starting the win-back campaign", left, as_of, run_id)
    return True
