"""Run a core job (a generator of events) in a QThread and turn its events into signals.

Why a worker and not a plain thread: signals emitted here are queued onto the GUI thread,
so plots and labels only ever change there (DESIGN.md, "Plots update on the GUI thread
only"). The job factory is called inside the worker thread so that torch, which takes
about 1.5 s to import, never loads on the GUI thread.

Only QtCore is used; the worker knows nothing about widgets.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from cellseg_gui.core.events import (
    FAILED,
    EpochEnded,
    Finished,
    LRProbe,
    Message,
    Predicted,
    SampleLosses,
    Started,
    StepEnded,
)
from cellseg_gui.core.jobs import CancelToken

log = logging.getLogger(__name__)


def protect_bool_refcounts() -> None:
    """Work around a PySide6 6.12 bug on Python < 3.12: every ``Signal.emit()`` made from
    Python returns ``True`` without taking a reference, so each emission drops the
    reference count of ``True`` by one. A long training run emits thousands of signals and
    the interpreter then aborts ("bool_dealloc: deallocating True or False"). Python 3.12
    made the bools immortal; here we give them a huge reference count instead."""
    global _BOOLS_PROTECTED
    if _BOOLS_PROTECTED or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    import ctypes  # noqa: PLC0415

    for obj in (True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40
    _BOOLS_PROTECTED = True


_BOOLS_PROTECTED = False
protect_bool_refcounts()

JobFactory = Callable[[], Iterator[Any]]

# Workers whose thread is still running. Holding them here keeps the Python objects alive
# until their thread has ended (a collected QThread that is still running aborts the app),
# and lets the window and the tests stop whatever is left.
_LIVE: set[JobWorker] = set()


def live_workers() -> list[JobWorker]:
    """Workers whose thread has not finished yet."""
    return [w for w in list(_LIVE) if w.is_running()]


def stop_all(timeout_ms: int = 5000) -> bool:
    """Cancel every running job and wait for the threads; True if all ended in time."""
    workers = list(_LIVE)
    for w in workers:
        w.cancel()
    return all(w.wait(timeout_ms) for w in workers)


def default_torch_threads() -> int:
    """Leave one core to the GUI thread: on a 2-core laptop training gets 1 thread, and the
    event loop keeps answering instead of queueing behind torch's thread pool."""
    return max(1, (os.cpu_count() or 2) - 1)


def is_out_of_memory(exc: BaseException | str) -> bool:
    """True for torch.cuda.OutOfMemoryError (checked by name so torch need not load)."""
    if isinstance(exc, BaseException) and type(exc).__name__ == "OutOfMemoryError":
        return True
    return "out of memory" in str(exc).lower()


def clean_message(exc: BaseException) -> str:
    """One readable line for the panel: no traceback (that goes to the log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:297] + "..."
    if isinstance(exc, (ValueError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class JobWorker(QObject):
    """Iterates one job generator in its own QThread.

    Signals (all delivered on the GUI thread when connected from there):
    ``started(Started)``, ``step(list[StepEnded])`` -- steps are coalesced, at most one
    emission per ``step_interval`` seconds, so a fast job cannot flood the event loop --
    ``epoch(EpochEnded)``, ``sampleLosses(SampleLosses)``, ``lrProbe(LRProbe)``,
    ``predicted(Predicted)``, ``message(text, level)``, ``failed(text)`` (an exception,
    as one clean line), ``finished(Finished)`` (always exactly once, also after a failure)
    and ``done()`` last.

    ``on_oom``: called with the number of the retry (1) when the job runs out of GPU
    memory; returns a new factory (e.g. with half the batch) and a message, or None.
    """

    started = Signal(object)
    step = Signal(object)
    epoch = Signal(object)
    sampleLosses = Signal(object)
    lrProbe = Signal(object)
    predicted = Signal(object)
    message = Signal(str, str)
    failed = Signal(str)
    finished = Signal(object)
    done = Signal()

    def __init__(
        self,
        factory: JobFactory,
        *,
        token: CancelToken | None = None,
        name: str = "job",
        on_oom: Callable[[], tuple[JobFactory, str] | None] | None = None,
        torch_threads: int | None = None,
        step_interval: float = 0.05,
    ) -> None:
        super().__init__()
        self._factory = factory
        self.token = token if token is not None else CancelToken()
        self.name = name
        self._on_oom = on_oom
        self._torch_threads = torch_threads
        self._step_interval = step_interval
        self._pending: list[StepEnded] = []
        self._last_flush = 0.0
        self._thread: QThread | None = None
        self.result: Finished | None = None

    # --- GUI-thread API ---------------------------------------------------------------
    def start(self) -> None:
        """Start the thread. Call once, from the GUI thread."""
        if self._thread is not None:
            raise RuntimeError("a JobWorker runs once; make a new one")
        # The worker stays in the GUI thread; only _run executes in the new thread. Signals
        # emitted from there are queued to their GUI-thread receivers, and ``finished`` of
        # the thread reaches _forget on the GUI thread once the thread has really ended.
        thread = _Thread(self._run)
        thread.setObjectName(f"cellseg-{self.name}")
        self._thread = thread
        thread.finished.connect(self._forget)
        _LIVE.add(self)
        thread.start(QThread.Priority.LowPriority)

    def cancel(self) -> None:
        """Ask the job to stop. Safe from any thread: it only sets the token, which the
        job checks once per batch (a queued signal would wait for the job to end)."""
        self.token.cancel()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def wait(self, timeout_ms: int = 5000) -> bool:
        """Block until the thread ended (True) or the timeout passed (False)."""
        if self._thread is None:
            return True
        return self._thread.wait(timeout_ms)

    def stop(self, timeout_ms: int = 5000) -> bool:
        self.cancel()
        return self.wait(timeout_ms)

    def _forget(self) -> None:
        _LIVE.discard(self)

    # --- worker thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._set_threads()
            factory: JobFactory | None = self._factory
            retried = False
            while factory is not None:
                try:
                    oom = self._iterate(factory)
                except Exception as exc:  # noqa: BLE001 - any job error becomes a message
                    if is_out_of_memory(exc):
                        oom = clean_message(exc)
                    else:
                        log.exception("job %s failed", self.name)
                        self._fail(clean_message(exc))
                        break
                factory = None
                if oom is not None:
                    retry = None if retried or self._on_oom is None else self._on_oom()
                    _free_gpu_memory()
                    if retry is None:
                        self._fail(f"Out of GPU memory: {oom}", hint=_OOM_HINT)
                    else:
                        retried = True
                        factory, text = retry
                        self.message.emit(text, "warning")
        finally:
            self._flush()
            if self.result is None:
                self.result = Finished(reason=FAILED, message="the job ended without a result")
                self.finished.emit(self.result)
            self.done.emit()

    def _set_threads(self) -> None:
        _lower_thread_priority()
        if self._torch_threads and self._torch_threads > 0:
            import torch  # noqa: PLC0415 - loads in the worker thread on purpose

            torch.set_num_threads(self._torch_threads)

    def _iterate(self, factory: JobFactory) -> str | None:
        """Run one attempt. Returns an out-of-memory message to trigger a retry."""
        for event in factory():
            if isinstance(event, StepEnded):
                self._pending.append(event)
                now = time.monotonic()
                if now - self._last_flush >= self._step_interval:
                    self._flush(now)
                continue
            self._flush()
            if isinstance(event, Finished):
                if event.reason == FAILED and is_out_of_memory(event.message):
                    return event.message
                self.result = event
                self.finished.emit(event)
                return None
            self._emit(event)
        return None

    def _emit(self, event: Any) -> None:
        if isinstance(event, Started):
            self.started.emit(event)
        elif isinstance(event, EpochEnded):
            self.epoch.emit(event)
        elif isinstance(event, SampleLosses):
            self.sampleLosses.emit(event)
        elif isinstance(event, LRProbe):
            self.lrProbe.emit(event)
        elif isinstance(event, Predicted):
            self.predicted.emit(event)
        elif isinstance(event, Message):
            self.message.emit(event.text, event.level)
        else:
            log.debug("job %s: ignored event %r", self.name, event)

    def _flush(self, now: float | None = None) -> None:
        self._last_flush = time.monotonic() if now is None else now
        if self._pending:
            batch, self._pending = self._pending, []
            self.step.emit(batch)

    def _fail(self, text: str, hint: str = "") -> None:
        self._flush()
        self.failed.emit(text)
        self.result = Finished(reason=FAILED, message=text, hint=hint)
        self.finished.emit(self.result)


class _Thread(QThread):
    """A thread that runs one callable and ends; no event loop, so nothing has to quit it
    (a queued quit() would never arrive while the GUI thread is blocked in wait())."""

    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__()
        self._target = target

    def run(self) -> None:  # noqa: D102 - QThread API
        self._target()


def _lower_thread_priority(nice: int = 10) -> None:
    """On Linux a thread is a task with its own nice value: make the job's thread yield the
    CPU to the GUI thread when both want it (QThread's priorities do nothing there for
    ordinary users). Best effort; other systems rely on QThread.LowPriority."""
    if sys.platform.startswith("linux"):
        import threading

        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
        except (OSError, AttributeError):
            pass


_OOM_HINT = "Lower the batch size or the crop size, or train on the CPU."


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
