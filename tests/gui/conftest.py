"""GUI test set-up: offscreen Qt (tests/conftest.py), and no job thread may outlive a test."""

from __future__ import annotations

import threading
import time

import pytest

from cellseg_gui.workers.job_worker import live_workers, protect_bool_refcounts, undelivered

# PySide6 6.12 drops a reference to True on every Signal.emit() from Python (see
# protect_bool_refcounts); long GUI test sessions would otherwise abort at exit.
protect_bool_refcounts()


@pytest.fixture(autouse=True)
def _no_job_thread_left(qtbot):
    """Fail any test that leaves a job thread running (after stopping it), and deliver the
    last signals of every job before qtbot closes the test's widgets (this fixture
    depends on qtbot, so it is torn down first): a late ``finished`` must not reach a
    window of the next test's time that no longer exists."""
    yield
    # A job that has finished may still be leaving its thread: give it a moment.
    left = [w for w in live_workers() if not (w.result is not None and w.wait(3000))]
    for worker in left:
        worker.stop(10000)
    deadline = time.monotonic() + 5
    while undelivered() and time.monotonic() < deadline:
        qtbot.wait(20)
    assert not left, f"job threads left running: {[w.name for w in left]}"
    # the list's figures after an edit and the images' roles for a model are worked out
    # on threads of the window's own, which closing it ends
    own = [t.name for t in threading.enumerate() if t.name.startswith(("rescore", "roles"))]
    assert not own, f"window threads left running (editor.shutdown / close not called): {own}"
    assert not undelivered(), f"jobs whose signals never arrived: {[w.name for w in undelivered()]}"
