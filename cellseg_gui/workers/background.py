"""One background thread for short Python calls, whose results are handed back on the GUI
thread: the mask saves, the list's figures after an edit and the images' roles all run
this way.

A call's ``done(future)`` runs on the GUI thread, from a timer that polls while calls are
under way, not from a cross-thread signal: a signal queued to an object that is gone by
the time it arrives is what a poll owned by that object cannot outlive. The thread starts
with the first call, after the GUI thread has taken over garbage collection
(``gui_gc.collect_on_gui_thread``), and ``shutdown`` waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QObject, QTimer

from cellseg_gui.workers.gui_gc import collect_on_gui_thread

__all__ = ["BackgroundCalls"]


class BackgroundCalls(QObject):
    """Calls run one at a time on a thread named ``name``; each ``done`` on the GUI thread."""

    def __init__(self, name: str, poll_ms: int = 50, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._done: dict[Future, Callable[[Future], None]] = {}
        self._poll = QTimer(self)
        self._poll.setInterval(poll_ms)
        self._poll.timeout.connect(self._collect)

    def submit(self, fn: Callable[..., Any], *args: Any, done: Callable[[Future], None]) -> Future:
        """Run ``fn(*args)`` on the thread; ``done(future)`` on the GUI thread once it is
        over (also when it failed or was cancelled: ``future`` says which)."""
        if self._executor is None:
            collect_on_gui_thread()  # no Qt object may be collected on that thread
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        fut = self._executor.submit(fn, *args)
        self._done[fut] = done
        self._poll.start()
        return fut

    @property
    def busy(self) -> bool:
        """Calls are under way or their ``done`` has not run yet."""
        return bool(self._done)

    def finish(self, fut: Future) -> None:
        """Wait for ``fut`` and run its ``done`` now (a save that must be on disk before
        going on); nothing when its ``done`` already ran or it was forgotten."""
        done = self._done.pop(fut, None)
        if done is not None:
            fut.exception()  # waits, and a failure is ``done``'s to report
            done(fut)

    def finish_all(self) -> None:
        """``finish`` every call under way, in the order they were made."""
        for fut in list(self._done):
            self.finish(fut)

    def forget(self, fut: Future) -> None:
        """Cancel ``fut`` if it has not started and never run its ``done``: what it
        figures is no longer wanted (a newer edit, another project)."""
        fut.cancel()
        self._done.pop(fut, None)
        if not self._done:
            self._poll.stop()

    def forget_all(self) -> None:
        for fut in list(self._done):
            self.forget(fut)

    def _collect(self) -> None:
        for fut in [f for f in self._done if f.done()]:
            done = self._done.pop(fut, None)
            if done is not None:  # an earlier ``done`` may have forgotten it
                done(fut)
        if not self._done:
            self._poll.stop()

    def shutdown(self) -> None:
        """Forget what has not started, wait for what has, and end the thread: the owner
        is closing. Run ``finish_all`` first for calls whose ``done`` must still run."""
        self.forget_all()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
