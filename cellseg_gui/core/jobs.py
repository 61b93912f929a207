"""Cancellation for jobs. A Stop button calls ``cancel()`` directly from the GUI
thread (a queued signal would arrive only after the job ends); jobs check
``cancelled`` at least once per batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellseg_gui.core.events import Event


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __bool__(self) -> bool:  # pragma: no cover - guard against `if token:` mistakes
        raise TypeError("use token.cancelled")


class Cancelled(Exception):
    """Raised inside a job's helpers to unwind to the generator, which then yields
    ``Finished(reason="cancelled")``."""


# A job: a zero-argument callable returning the generator of its events, called in the
# thread (or process) that runs it, so what it imports loads there.
JobFactory = Callable[[], "Iterator[Event]"]
