"""The one background thread that the mask saves, the list's figures after an edit and
the images' roles share (``workers.background``): results come back on the GUI thread, a
forgotten call never reports, and ``finish`` hands a result over at once."""

from __future__ import annotations

import threading

from cellseg_gui.workers.background import BackgroundCalls


def test_done_runs_on_the_gui_thread_in_order_and_failures_reach_it(qtbot) -> None:
    calls = BackgroundCalls("bg-test", poll_ms=5)
    seen: list[tuple[str, object, bool]] = []

    def note(label):
        def done(fut):
            error = fut.exception()
            seen.append((label, error if error else fut.result(), threading.current_thread()
                         is threading.main_thread()))  # fmt: skip

        return done

    calls.submit(lambda: threading.current_thread().name, done=note("name"))
    calls.submit(lambda: 1 / 0, done=note("fails"))
    assert calls.busy
    qtbot.waitUntil(lambda: not calls.busy, timeout=5000)
    assert [s[0] for s in seen] == ["name", "fails"]
    assert str(seen[0][1]).startswith("bg-test")  # it ran on the named thread...
    assert isinstance(seen[1][1], ZeroDivisionError)
    assert all(s[2] for s in seen)  # ...and reported on the GUI thread
    calls.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("bg-test")]


def test_a_forgotten_call_never_reports_and_finish_reports_at_once(qtbot) -> None:
    calls = BackgroundCalls("bg-test", poll_ms=5)
    gate = threading.Event()
    seen: list[str] = []
    first = calls.submit(gate.wait, 5, done=lambda f: seen.append("first"))
    queued = calls.submit(lambda: "late", done=lambda f: seen.append("queued"))
    calls.forget(queued)  # not started: cancelled, and its done never runs
    assert queued.cancelled()
    gate.set()
    calls.finish(first)  # waits for it and reports before returning
    assert seen == ["first"]
    calls.finish(first)  # once only
    qtbot.wait(50)
    assert seen == ["first"] and not calls.busy
    # finish_all: every call under way is over and reported when it returns
    for i in range(3):
        calls.submit(lambda i=i: i, done=lambda f: seen.append(f"r{f.result()}"))
    calls.finish_all()
    assert seen == ["first", "r0", "r1", "r2"]
    calls.shutdown()
