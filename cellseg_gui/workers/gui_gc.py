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

from PySide6.QtCore import QCoreApplication, QTimer

_TIMER: QTimer | None = None


def collect_on_gui_thread(interval_ms: int = 500) -> bool:
    """Install the policy (idempotent). Call from the GUI thread before starting any
    thread that runs Python code. Returns True when the GUI thread now owns collection;
    False without a Qt application or when called from another thread."""
    global _TIMER
    app = QCoreApplication.instance()
    if app is None or threading.current_thread() is not threading.main_thread():
        return False
    if _TIMER is not None:
        gc.disable()  # something may have switched it back on
        return True
    timer = QTimer(app)
    timer.setObjectName("cellseg-gc")
    timer.setInterval(interval_ms)
    timer.timeout.connect(collect_if_due)
    # Before the application object goes, hand collection back to the interpreter.
    app.aboutToQuit.connect(_restore)
    timer.start()
    _TIMER = timer
    gc.disable()
    return True


def collect_if_due() -> int:
    """One tick: collect the generations whose counts passed their thresholds (as the
    interpreter would have), youngest first. Returns the number of objects found."""
    found = 0
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if c0 > t0:
        found += gc.collect(0)
        if c1 >= t1:
            found += gc.collect(1)
            if c2 >= t2:
                found += gc.collect(2)
    return found


def is_active() -> bool:
    return _TIMER is not None and not gc.isenabled()


def _restore() -> None:
    global _TIMER
    if _TIMER is not None:
        _TIMER.stop()
        _TIMER = None
    gc.enable()
