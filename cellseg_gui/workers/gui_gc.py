"""Python's cyclic garbage collector runs only on the GUI thread.

Why: the collector runs in whichever thread happens to allocate when a generation fills
up. If that is a job thread (training, a mask save) and the garbage holds Qt objects --
a closed dialog, a menu whose wrapper sat in a reference cycle -- their C++ destructors
run there. The GUI thread may at the same moment be destroying related objects: it holds
a Qt lock and waits for the GIL while the job thread holds the GIL and waits for that
lock. A CI run hung for an hour this way (job thread: ``gc_collect_main`` ->
``QObject::~QObject`` -> ``GilState::acquire``; GUI thread: ``~QAction`` ->
``QBasicMutex::lockInternal``). pyqtgraph's ``GarbageCollector`` exists for the same
reason.

So once a Qt application exists and any background thread is about to start, automatic
collection is switched off and a timer on the GUI thread collects instead, using the
interpreter's own thresholds. Reference counting still frees everything that is not in
a cycle at once, in whichever thread drops it; only cycles wait for the next tick.
"""

from __future__ import annotations

import gc
import threading
import time

import shiboken6
from PySide6.QtCore import QCoreApplication, QTimer

_TIMER: QTimer | None = None


def collect_on_gui_thread(interval_ms: int = 500) -> bool:
    """Install the policy (idempotent). Call from the GUI thread before starting any
    thread that runs Python code. Returns True when the GUI thread now owns collection;
    False without a Qt application or when called from another thread.

    Automatic collection stays off for the rest of the process, also while the
    application quits: job threads may still be ending then."""
    global _TIMER
    app = QCoreApplication.instance()
    if app is None or threading.current_thread() is not threading.main_thread():
        return False
    gc.disable()
    if _TIMER is not None and shiboken6.isValid(_TIMER):
        return True
    timer = QTimer(app)  # an application made anew gets a timer anew
    timer.setObjectName("cellseg-gc")
    timer.setInterval(interval_ms)
    timer.timeout.connect(collect_if_due)
    timer.start()
    _TIMER = timer
    return True


# A full collection scans every tracked object: about 150 ms on the GUI thread once
# torch, scipy and pyqtgraph are loaded (237,000 objects, measured on a 2-core EPYC).
# CPython skips most of them by a heuristic Python cannot see, so here they are spaced
# out instead; garbage cycles that have reached the oldest generation wait that long.
FULL_EVERY_S = 300.0
_last_full = time.monotonic()


def collect_if_due() -> int:
    """One tick: collect the generations whose counts passed their thresholds (as the
    interpreter would have), youngest first, the oldest at most every FULL_EVERY_S
    seconds. Returns the number of objects found."""
    global _last_full
    found = 0
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if c0 > t0:
        found += gc.collect(0)
        if c1 >= t1:
            found += gc.collect(1)
            if c2 >= t2 and time.monotonic() - _last_full >= FULL_EVERY_S:
                found += gc.collect(2)
                _last_full = time.monotonic()
    return found
