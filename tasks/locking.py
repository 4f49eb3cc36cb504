"""One run at a time per output: a lock held for the whole run.

PostgreSQL: a session-level advisory lock, keyed by the output schema, on a connection of its own; it
is released when the run ends or its process dies (the server drops a dead session's locks). SQLite: an
exclusive ``flock`` on a ``.lock`` file beside the database, also released by the kernel when the
process dies. A second run does not wait: it stops at once with a message naming the lock's holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tasks.database import connection_errors, make_engine
from tasks.errors import SegmentsError
from tasks.settings import SegmentSettings


class RunInProgressError(SegmentsError):
    """Another run holds the lock of the same output."""


def lock_key(settings: SegmentSettings, what: str | None = None) -> int:
    """A stable signed 64-bit key for the output (database and schema) of ``settings``, or, with
    ``what``, for that object of the same database (e.g. the covering index of a source table)."""
    url = make_url(settings.database_url.get_secret_value())
    name = f"customer-segments:{url.host}:{url.port}:{url.database}:{what or settings.output_schema}"
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def run_lock(settings: SegmentSettings) -> Iterator[None]:
    """Hold the output's lock for the duration of the block, or raise :class:`RunInProgressError`."""
    if settings.dialect == "postgresql":
        schema = settings.output_schema
        with advisory_lock(
            settings,
            lock_key(settings),
            lambda who: RunInProgressError(f"another run is writing to schema {schema!r}{who}; wait for it to finish"),
        ):
            yield
    else:
        with _file_lock(settings):
            yield


@contextlib.contextmanager
def advisory_lock(settings: SegmentSettings, key: int, busy: Callable[[str], SegmentsError]) -> Iterator[None]:
    """Hold PostgreSQL's session-level advisory lock ``key`` on a connection of its own for the block.
    If another session holds it, raise ``busy(who)`` at once, ``who`` naming the holder's server
    process (or empty)."""
    url = settings.database_url.get_secret_value()
    engine = make_engine(url)
    try:
        with connection_errors(url), engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            acquired = conn.execute(sa.text("select pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
            if not acquired:
                # pg_locks shows a bigint key as two unsigned 32-bit halves
                holder = conn.execute(
                    sa.text(
                        "select a.pid, a.application_name, a.backend_start from pg_locks l "
                        "join pg_stat_activity a on a.pid = l.pid where l.locktype = 'advisory' and l.granted "
                        "and l.objsubid = 1 and l.classid::bigint = :high and l.objid::bigint = :low"
                    ),
                    {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
                ).first()
                who = ""
                if holder is not None:
                    since = f"{holder.backend_start:%H:%M:%S}"
                    who = f" (server process {holder.pid}, {holder.application_name}, since {since})"
                raise busy(who)
            try:
                yield
            finally:
                conn.execute(sa.text("select pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(settings: SegmentSettings) -> Iterator[None]:
    database = make_url(settings.database_url.get_secret_value()).database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).resolve().with_name(Path(database).name + ".lock")
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            who = f" (process {holder})" if holder else ""
            raise RunInProgressError(f"another run is writing to {database}{who}; wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
