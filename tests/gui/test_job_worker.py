"""The job worker: events become signals on the GUI thread, Stop is quick, failures become
one clean line, out-of-memory retries once, and no thread outlives a test."""

from __future__ import annotations

import threading
import time

import pytest

from cellseg_gui.core.events import (  # noqa: E402
    CANCELLED,
    DONE,
    FAILED,
    OUT_OF_MEMORY,
    EpochEnded,
    Finished,
    LRProbe,
    Message,
    Started,
    StepEnded,
)
from cellseg_gui.core.jobs import CancelToken  # noqa: E402
from cellseg_gui.workers.job_worker import JobWorker  # noqa: E402


def fake_fit(token: CancelToken, steps: int = 200, delay: float = 0.0, epochs: int = 2):
    yield Started(
        job="fit",
        device="cpu",
        precision="fp32",
        total_steps=steps * epochs,
        epochs=epochs,
        steps_per_epoch=steps,
    )
    g = 0
    for e in range(epochs):
        for s in range(steps):
            if token.cancelled:
                yield Finished(reason=CANCELLED, message="stopped")
                return
            if delay:
                time.sleep(delay)
            yield StepEnded(epoch=e, step=s, global_step=g, loss=1.0 / (g + 1), lr=1e-3)
            g += 1
        yield EpochEnded(
            epoch=e,
            epochs=epochs,
            train_loss=0.5,
            val_loss=0.6,
            train_jaccard=(1.0, 0.5),
            val_jaccard=(1.0, 0.4),
            train_fg_jaccard=0.5,
            val_fg_jaccard=0.4,
            seconds=0.1,
            lr=1e-3,
        )
    yield Message("almost done")
    yield Finished(reason=DONE, result={"ok": 1})


def test_events_arrive_as_signals_on_the_gui_thread(qtbot):
    token = CancelToken()
    w = JobWorker(lambda: fake_fit(token), token=token, name="fake")
    steps, epochs, msgs, threads = [], [], [], set()
    w.step.connect(lambda batch: (steps.extend(batch), threads.add(threading.get_ident())))
    w.epoch.connect(epochs.append)
    w.message.connect(lambda t, lvl: msgs.append(t))
    with qtbot.waitSignal(w.done, timeout=10000):
        with qtbot.waitSignal(w.finished, timeout=10000) as fin:
            w.start()
    assert fin.args[0].reason == DONE and fin.args[0].result == {"ok": 1}
    assert [s.global_step for s in steps] == list(range(400))  # coalesced, none lost
    assert len(epochs) == 2 and msgs == ["almost done"]
    assert threads == {threading.get_ident()}
    qtbot.waitUntil(lambda: not w.is_running(), timeout=5000)


def test_steps_are_coalesced_so_the_event_loop_is_not_flooded(qtbot):
    token = CancelToken()
    w = JobWorker(lambda: fake_fit(token, steps=5000, epochs=1), token=token)
    batches = []
    w.step.connect(batches.append)
    with qtbot.waitSignal(w.done, timeout=20000):
        w.start()
    assert sum(len(b) for b in batches) == 5000
    assert len(batches) < 200  # far fewer emissions than steps


def test_cancel_from_gui_thread_stops_quickly(qtbot):
    token = CancelToken()
    w = JobWorker(lambda: fake_fit(token, steps=100000, delay=0.01), token=token)
    with qtbot.waitSignal(w.started, timeout=5000):
        w.start()
    t0 = time.monotonic()
    with qtbot.waitSignal(w.finished, timeout=5000) as fin:
        w.cancel()
    assert time.monotonic() - t0 < 2.0
    assert fin.args[0].reason == CANCELLED
    assert w.wait(2000)


def test_exception_becomes_one_clean_line(qtbot):
    def boom():
        yield Started(job="fit", device="cpu", precision="fp32")
        raise ValueError("masks/a.png: mask 10x10 does not match image 20x20")

    w = JobWorker(boom)
    failed = []
    w.failed.connect(failed.append)
    with qtbot.waitSignal(w.finished, timeout=5000) as fin:
        w.start()
    assert failed == ["masks/a.png: mask 10x10 does not match image 20x20"]
    assert fin.args[0].reason == FAILED and "Traceback" not in fin.args[0].message
    assert w.wait(2000)


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError (matched by name)."""


def test_out_of_memory_retries_once_with_half_the_batch(qtbot):
    batches = []

    def job(batch):
        def gen():
            batches.append(batch)
            if batch > 4:
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            yield LRProbe(step=0, lr=1e-3, loss=1.0, smoothed=1.0)
            yield Finished(reason=DONE)

        return gen

    w = JobWorker(job(8), on_oom=lambda: (job(4), "GPU out of memory: retrying with batch 4"))
    msgs = []
    w.message.connect(lambda t, lvl: msgs.append((t, lvl)))
    with qtbot.waitSignal(w.finished, timeout=5000) as fin:
        w.start()
    assert batches == [8, 4]
    assert msgs == [("GPU out of memory: retrying with batch 4", "warning")]
    assert fin.args[0].reason == DONE
    assert w.wait(2000)


def test_out_of_memory_twice_fails_with_advice(qtbot):
    def gen():
        raise OutOfMemoryError("CUDA out of memory")
        yield  # pragma: no cover

    w = JobWorker(gen, on_oom=lambda: (gen, "retrying with batch 2"))
    with qtbot.waitSignal(w.finished, timeout=5000) as fin:
        w.start()
    assert fin.args[0].reason == FAILED
    assert "memory" in fin.args[0].message and fin.args[0].hint
    assert w.wait(2000)


def test_engine_reported_out_of_memory_also_retries(qtbot):
    """fit catches the CUDA error itself (as seen on an H100) and finishes with the typed
    reason OUT_OF_MEMORY: retry too. A FAILED whose message merely mentions memory is a
    failure like any other (no message is parsed)."""
    tries = []

    def job(batch):
        def gen():
            tries.append(batch)
            if batch > 4:
                yield Finished(
                    reason=OUT_OF_MEMORY,
                    message="training failed: CUDA out of memory. Tried to allocate 20.00 MiB",
                )
                return
            yield Finished(reason=DONE)

        return gen

    w = JobWorker(job(8), on_oom=lambda: (job(4), "retrying with batch 4"))
    with qtbot.waitSignal(w.done, timeout=5000):
        w.start()
    assert tries == [8, 4] and w.result.reason == DONE
    assert w.wait(2000)

    def mentions_memory():
        yield Finished(reason=FAILED, message="the mask says 'out of memory' in its name")

    w = JobWorker(mentions_memory, on_oom=lambda: pytest.fail("a message was parsed"))
    with qtbot.waitSignal(w.done, timeout=5000):
        w.start()
    assert w.result.reason == FAILED and w.wait(2000)


def test_cycles_are_collected_on_the_gui_thread_only(qtbot):
    """A job that makes lots of reference cycles must not run Python's collector on its
    own thread: there it would destroy Qt objects left in cycles, which deadlocked a CI
    run (see workers/gui_gc.py). The GUI thread collects them instead, on a timer."""
    import gc
    import weakref

    from PySide6.QtCore import QObject

    collectors, destroyers = [], []

    def note(phase, info):
        if phase == "start":
            collectors.append(threading.get_ident())

    # Qt garbage in a cycle, left for the collector as a closed dialog would be; the
    # weakref's callback runs in the thread that frees it.
    o = QObject()
    o.me = o
    alive = weakref.ref(o, lambda _: destroyers.append(threading.get_ident()))
    del o

    def cycles():
        for i in range(200_000):
            a = []
            a.append(a)  # a cycle only the collector frees
            if i % 20_000 == 0:
                yield Message(f"{i}")
        yield Finished(reason=DONE)

    gc.callbacks.append(note)
    try:
        w = JobWorker(cycles)
        with qtbot.waitSignal(w.done, timeout=30000):
            w.start()
        qtbot.waitUntil(lambda: alive() is None, timeout=5000)
    finally:
        gc.callbacks.remove(note)
    assert collectors, "nothing collected the cycles"
    assert set(collectors) == {threading.get_ident()}
    assert destroyers == [threading.get_ident()]


def test_full_collections_are_spaced_out(monkeypatch):
    """A full collection costs about 150 ms on the GUI thread once torch is loaded, so the
    timer runs one at most every FULL_EVERY_S seconds; younger generations as usual."""
    import gc

    from cellseg_gui.workers import gui_gc

    generations = []

    def note(phase, info):
        if phase == "start":
            generations.append(info["generation"])

    def tick_with_garbage():
        for _ in range(50):
            a = []
            a.append(a)
        gui_gc.collect_if_due()

    old = gc.get_threshold()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_threshold(10, 1, 1)  # every tick is due in every generation
    gc.callbacks.append(note)
    try:
        monkeypatch.setattr(gui_gc, "_last_full", time.monotonic())
        for _ in range(20):
            tick_with_garbage()
        assert 0 in generations and 1 in generations and 2 not in generations
        generations.clear()
        monkeypatch.setattr(gui_gc, "_last_full", time.monotonic() - gui_gc.FULL_EVERY_S - 1)
        for _ in range(20):
            tick_with_garbage()
        assert generations.count(2) == 1  # one full collection, then the wait starts again
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*old)
        if was_enabled:
            gc.enable()
