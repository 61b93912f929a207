"""Run a core job (a generator of events) in a thread and turn its events into signals.

The job's thread only puts events on a queue; a timer on the GUI thread takes them off and
emits the signals there, so plots and labels only ever change on the GUI thread
(DESIGN.md, "Plots update on the GUI thread only") and no Qt object is used from two
threads. The job factory is called inside the job's thread so that torch, which takes
about 1.5 s to import, never loads on the GUI thread.

Only QtCore is used; the worker knows nothing about widgets.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from cellseg_gui.core.events import (
    FAILED,
    OUT_OF_MEMORY,
    EpochEnded,
    Finished,
    LRProbe,
    Message,
    Predicted,
    SampleLosses,
    Started,
    StepEnded,
    is_out_of_memory,
)
from cellseg_gui.core.jobs import CancelToken, JobFactory
from cellseg_gui.workers.gui_gc import collect_on_gui_thread

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


# Workers whose events have not all been delivered. Holding them here keeps the Python
# objects (and their delivery timers) alive until ``done`` has been emitted, even when the
# caller dropped its reference, and lets the window and the tests stop whatever is left.
_LIVE: set[JobWorker] = set()


def live_workers() -> list[JobWorker]:
    """Workers whose thread has not finished yet."""
    return [w for w in list(_LIVE) if w.is_running()]


def undelivered() -> list[JobWorker]:
    """Workers that have not emitted ``done`` yet (running, or with signals still queued
    for the GUI thread's event loop)."""
    return list(_LIVE)


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


def clean_message(exc: BaseException) -> str:
    """One readable line for the panel: no traceback (that goes to the log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:297] + "..."
    if isinstance(exc, (ValueError, OSError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class JobWorker(QObject):
    """Iterates one job generator in its own thread and re-emits its events as signals.

    Signals (all emitted on the GUI thread, the one that made the worker):
    ``started(Started)``, ``step(list[StepEnded])`` -- steps are coalesced, at most one
    emission per ``step_interval`` seconds, so a fast job cannot flood the event loop --
    ``epoch(EpochEnded)``, ``sampleLosses(SampleLosses)``, ``lrProbe(LRProbe)``,
    ``predicted(Predicted)``, ``message(text, level)``, ``failed(text)`` (an exception,
    as one clean line), ``finished(Finished)`` (always exactly once, also after a failure)
    and ``done()`` last.

    The job's thread never touches Qt, nor holds a reference to this object: it runs a
    plain ``_Job`` that puts events on a queue, and a timer on the GUI thread empties the
    queue every ``step_interval`` seconds and emits the signals there. Together with
    ``gui_gc`` (cycles are collected on the GUI thread only) no Qt object is created,
    used or destroyed on the job's thread. PySide6 6.12 deadlocks or crashes otherwise:
    see ``gui_gc`` for the hang that CI met.

    ``on_oom``: called (in the job's thread) when the job runs out of GPU memory; returns
    a new factory (e.g. with half the batch) and a message, or None.
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
        self.token = token if token is not None else CancelToken()
        self.name = name
        self._job = _Job(factory, name, on_oom, torch_threads)
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, int(step_interval * 1000)))
        self._timer.timeout.connect(self._deliver)
        self._thread: threading.Thread | None = None
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._done = False

    @property
    def result(self) -> Finished | None:
        """The job's Finished event, as soon as the job has sent it (it may not have been
        emitted as ``finished`` yet)."""
        return self._job.result

    # --- GUI-thread API ---------------------------------------------------------------
    def start(self) -> None:
        """Start the thread. Call once, from the GUI thread."""
        if self._thread is not None:
            raise RuntimeError("a JobWorker runs once; make a new one")
        collect_on_gui_thread()
        # A daemon thread: a job still running when the interpreter exits must not keep
        # the process alive (files are written atomically, so nothing is left half-done).
        self._thread = threading.Thread(
            target=self._job.run, name=f"cellseg-{self.name}", daemon=True
        )
        _LIVE.add(self)
        self._timer.start()
        self._thread.start()

    def cancel(self) -> None:
        """Ask the job to stop. Safe from any thread: it only sets the token, which the
        job checks once per batch."""
        self.token.cancel()

    def is_running(self) -> bool:
        """The job's thread has not ended yet (its last events may still be queued)."""
        return self._thread is not None and self._thread.is_alive()

    def is_active(self) -> bool:
        """Started, and ``done`` not emitted yet: the job runs, or its last signals are
        still on their way to the GUI thread."""
        return self._thread is not None and not self._done

    def is_done(self) -> bool:
        """``done`` has been emitted: every signal of the job has been delivered."""
        return self._done

    def wait(self, timeout_ms: int = 5000) -> bool:
        """Block until the thread ended (True) or the timeout passed (False). Signals
        still queued are emitted the next time the event loop runs."""
        if self._thread is None:
            return True
        self._thread.join(max(0, timeout_ms) / 1000)
        return not self._thread.is_alive()

    def stop(self, timeout_ms: int = 5000) -> bool:
        self.cancel()
        return self.wait(timeout_ms)

    def flush(self) -> None:
        """Emit now, on the GUI thread, whatever the job has queued (after ``wait``, all
        of it): for a window that is about to close and still wants the result."""
        self._deliver()

    def abandon(self) -> None:
        """Cancel, and once the thread has ended drop the signals not yet emitted: their
        receivers are going away (the window is closing). A thread still running keeps
        delivering until it ends."""
        self.cancel()
        if self.is_running():
            return
        self._timer.stop()
        self._job.drain()
        self._pending.clear()
        self._done = True
        _LIVE.discard(self)

    def _deliver(self) -> None:
        """Emit everything the job has queued, oldest first; consecutive steps in one
        list. Events wait in ``_pending`` and are taken one at a time, so a slot that
        spins the event loop (a dialog) and so re-enters here keeps the order."""
        self._pending.extend(self._job.drain())
        steps: list[StepEnded] = []
        while self._pending:
            kind, args = self._pending.popleft()
            if kind == "step":
                steps.append(args[0])
                continue
            if steps:
                batch, steps = steps, []
                self.step.emit(batch)
            if kind == "done":
                self._timer.stop()
                self._done = True
                _LIVE.discard(self)
                self.done.emit()
                return
            getattr(self, kind).emit(*args)
        if steps:
            self.step.emit(steps)


class _Job:
    """What runs in the job's thread: no Qt, and no reference to the JobWorker, so the
    last reference to a Qt object is never dropped there."""

    def __init__(
        self,
        factory: JobFactory,
        name: str,
        on_oom: Callable[[], tuple[JobFactory, str] | None] | None,
        torch_threads: int | None,
    ) -> None:
        self.factory: JobFactory | None = factory
        self.name = name
        self.on_oom = on_oom
        self.torch_threads = torch_threads
        self.events: queue.SimpleQueue[tuple[str, tuple[Any, ...]]] = queue.SimpleQueue()
        self.result: Finished | None = None

    def drain(self) -> list[tuple[str, tuple[Any, ...]]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def put(self, kind: str, *args: Any) -> None:
        self.events.put((kind, args))

    def run(self) -> None:
        try:
            self._set_threads()
            factory, retried = self.factory, False
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
                    retry = None if retried or self.on_oom is None else self.on_oom()
                    _free_gpu_memory()
                    if retry is None:
                        self._fail(f"Out of GPU memory: {oom}", hint=_OOM_HINT)
                    else:
                        retried = True
                        factory, text = retry
                        self.put("message", text, "warning")
        except BaseException as exc:  # noqa: BLE001 - never leave the GUI waiting
            log.exception("job %s crashed", self.name)
            if self.result is None:
                self._fail(clean_message(exc))
        finally:
            if self.result is None:
                self.result = Finished(reason=FAILED, message="the job ended without a result")
                self.put("finished", self.result)
            self.put("done")

    def _set_threads(self) -> None:
        _lower_thread_priority()
        if self.torch_threads and self.torch_threads > 0:
            import torch  # noqa: PLC0415 - loads in the worker thread on purpose

            torch.set_num_threads(self.torch_threads)

    def _iterate(self, factory: JobFactory) -> str | None:
        """Run one attempt. Returns an out-of-memory message to trigger a retry."""
        for event in factory():
            if isinstance(event, Finished):
                if event.reason == OUT_OF_MEMORY:  # a typed reason, not a parsed message
                    return event.message
                self.result = event
                self.put("finished", event)
                return None
            kind = _SIGNAL_OF.get(type(event))
            if kind == "message":
                self.put("message", event.text, event.level)
            elif kind is not None:
                self.put(kind, event)
            else:
                log.debug("job %s: ignored event %r", self.name, event)
        return None

    def _fail(self, text: str, hint: str = "") -> None:
        self.put("failed", text)
        self.result = Finished(reason=FAILED, message=text, hint=hint)
        self.put("finished", self.result)


_SIGNAL_OF: dict[type, str] = {
    StepEnded: "step",
    Started: "started",
    EpochEnded: "epoch",
    SampleLosses: "sampleLosses",
    LRProbe: "lrProbe",
    Predicted: "predicted",
    Message: "message",
}


def _lower_thread_priority(nice: int = 10) -> None:
    """On Linux a thread is a task with its own nice value: make the job's thread yield the
    CPU to the GUI thread when both want it. Best effort; elsewhere the job's thread runs
    at normal priority and the GUI thread still gets one core (``default_torch_threads``)."""
    if sys.platform.startswith("linux"):
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
