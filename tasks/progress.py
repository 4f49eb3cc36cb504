"""Progress of a run's long steps, for whoever watches: the CLI draws it with rich, Prefect logs it.

Steps announce themselves with :func:`step`; a listener registered with :func:`listening` (the CLI's
progress display) hears when each starts and finishes. With no listener, announcing costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: (step name, "start" or "done", detail) -> None
Listener = Callable[[str, str, str], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` for every step started and finished while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def _tell(name: str, event: str, detail: str) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(name, event, detail)


class Step:
    """A running step: :meth:`finish` records how many items it handled, for the rate."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.perf_counter()
        self.detail = ""

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def finish(self, items: int, unit: str) -> str:
        """Set and return the step's summary: items, seconds and items per second."""
        seconds = self.seconds
        rate = items / seconds if seconds > 0 else float("nan")
        self.detail = f"{items:,} {unit} in {seconds:.1f} s ({rate:,.0f} {unit}/s)"
        return self.detail


@contextmanager
def step(name: str) -> Iterator[Step]:
    """Announce the step ``name`` to listeners as started, and as done (with its summary) at the end."""
    current = Step(name)
    _tell(name, "start", "")
    try:
        yield current
    except BaseException:
        _tell(name, "failed", f"after {current.seconds:.1f} s")
        raise
    _tell(name, "done", current.detail or f"{current.seconds:.1f} s")
