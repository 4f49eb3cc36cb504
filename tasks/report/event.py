"""The event a successful run announces, ``segments.run.completed``: what activation flows react to
(a Prefect deployment trigger, for example a win-back campaign when many customers left Champions).

It says which outputs changed and how, in counts only: the as-of date, K, the model action, the
customers of each segment, and the moves between segments per pair. It carries no customer id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from tasks.load.assignments import SegmentMoves
from tasks.settings import SegmentSettings

if TYPE_CHECKING:
    from tasks.model.step import ModelOutcome

RUN_COMPLETED = "segments.run.completed"


@dataclass(frozen=True)
class RunEvent:
    """An event as Prefect's ``emit_event`` takes it."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]


def output_resource_id(settings: SegmentSettings) -> str:
    """``segments.output.<name>``: the output schema on PostgreSQL, the database file's name (without
    its extension) on SQLite, so that a trigger can follow one set of output tables."""
    if settings.dialect == "postgresql":
        name = settings.output_schema
    else:
        database = sa.engine.make_url(settings.database_url.get_secret_value()).database
        name = Path(database).stem if database else "memory"
    return f"segments.output.{name}"


def run_completed_event(
    settings: SegmentSettings, run_id: str, as_of: date, outcome: ModelOutcome, moves: SegmentMoves
) -> RunEvent:
    """The event of a run whose outputs committed. ``left`` and ``joined`` give, per segment name, the
    customers who left or joined it tonight (movers only: new customers are not counted), for
    triggers whose parameters pick one name out."""
    profiles = outcome.segments.profiles
    left: dict[str, int] = {}
    joined: dict[str, int] = {}
    for move in moves.moves:
        left[move["from_segment_name"]] = left.get(move["from_segment_name"], 0) + move["customers"]
        joined[move["to_segment_name"]] = joined.get(move["to_segment_name"], 0) + move["customers"]
    payload = {
        "run_id": run_id,
        "as_of": as_of.isoformat(),
        "n_clusters": outcome.n_clusters,
        "model_action": outcome.decision.action,
        "model_version": outcome.model_version,
        "customers": len(outcome.segments.assignments),
        "segments": [
            {"segment_id": int(segment_id), "segment_name": str(name), "customers": int(customers)}
            for segment_id, name, customers in zip(
                profiles["segment_id"], profiles["segment_name"], profiles["customers"], strict=True
            )
        ],
        "customers_moved": moves.customers_moved,
        "moved_by_refit": moves.moved_by_refit,
        "moves": moves.moves,
        "left": left,
        "joined": joined,
    }
    resource = {
        "prefect.resource.id": output_resource_id(settings),
        "prefect.resource.name": f"customer segments in {settings.masked_database_url()}",
    }
    return RunEvent(RUN_COMPLETED, resource, payload)
