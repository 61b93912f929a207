"""The image list's "J · AP" after an edit, figured off the GUI thread.

An image's figures compare its prediction with its mask; after the mask changes (a stroke,
an undo, an accepted prediction) they are figured again a moment after the last change.
That ran on the GUI thread: on set46 of usiigaci-phc (1022 x 1024, 73 cells) the first
stroke stalled the window 0.59 s (scipy's matching loading) and each later one 10-23 ms.
Now a snapshot of the mask is scored on one background thread and the result is taken back
on the GUI thread by a poll (as the mask saves are), and only if neither the mask nor the
prediction changed meanwhile; a newer change has already scheduled its own figures.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

from cellseg_gui.core.model.scoring import edited_mask_scores
from cellseg_gui.core.workspace import ShownPrediction, Workspace
from cellseg_gui.workers.gui_gc import collect_on_gui_thread

log = logging.getLogger(__name__)

RESCORE_MS = 300  # after the last change
POLL_MS = 30


class Rescorer(QObject):
    """Schedules and collects the figures of the images whose masks changed."""

    def __init__(self, workspace: Workspace, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self._meta: dict | None = None  # the active model's record (``model_meta``)
        self._meta_key: tuple[str, int] | None = None
        self._edits: dict[str, int] = {}  # changes seen per image: a result's freshness
        self._waiting: set[str] = set()
        # name -> (future, edits when snapped, the prediction scored)
        self._running: dict[str, tuple[Future, int, ShownPrediction]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RESCORE_MS)
        self._timer.timeout.connect(self._start)
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._collect)

    def changed(self, name: str) -> None:
        """``name``'s mask changed: figure its scores again, if it shows any."""
        self._edits[name] = self._edits.get(name, 0) + 1
        if self._closed or self.workspace.prediction(name) is None:
            return
        s = self.workspace.scores(name)
        if s.jaccard is None and s.ap50 is None:
            return
        self._waiting.add(name)
        self._timer.start()

    @property
    def busy(self) -> bool:
        """Figures are scheduled or being figured (tests wait on it)."""
        return bool(self._waiting or self._running)

    def _start(self) -> None:
        names, self._waiting = self._waiting, set()
        meta = self.model_meta()
        for name in names:
            doc, pred = self.workspace.document(name), self.workspace.prediction(name)
            if doc is None or pred is None or pred.labels.shape != doc.shape:
                continue
            if self._executor is None:
                collect_on_gui_thread()  # no Qt object may be collected on that thread
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rescore")
            old = self._running.get(name)
            if old is not None:
                old[0].cancel()  # not started yet: its mask is gone; started: ignored
            fut = self._executor.submit(
                edited_mask_scores, doc.stored(), doc.mode, pred.labels, pred.cells, meta
            )
            self._running[name] = (fut, self._edits.get(name, 0), pred)
        if self._running:
            self._poll.start()

    def _collect(self) -> None:
        for name, (fut, edits, pred) in list(self._running.items()):
            if not fut.done():
                continue
            del self._running[name]
            if fut.cancelled():
                continue
            error = fut.exception()
            if error is not None:  # the list keeps the figures it had; say why
                log.warning("figuring %s's scores after an edit failed: %s", name, error,
                            exc_info=error)  # fmt: skip
                continue
            fresh = edits == self._edits.get(name, 0) and self.workspace.prediction(name) is pred
            if fresh:
                jaccard, ap50 = fut.result()
                self.workspace.set_scores(name, jaccard=jaccard, ap50=ap50)
        if not self._running:
            self._poll.stop()

    def model_meta(self) -> dict | None:
        """The active model's record (how it reads masks), or None without one; read from
        its file once per file version, not on every rescore after a stroke."""
        from cellseg_gui.core.model.bundle_meta import BundleError, read_bundle_meta

        path = self.workspace.active_model
        if not path:
            return None
        try:
            key = (path, Path(path).stat().st_mtime_ns)
            if self._meta_key != key:
                self._meta, self._meta_key = read_bundle_meta(Path(path)), key
        except (BundleError, OSError):
            return None
        return self._meta

    def reset(self) -> None:
        """The project closes: forget what was scheduled or running for its images."""
        self._timer.stop()
        self._poll.stop()
        self._waiting.clear()
        for fut, _edits, _pred in self._running.values():
            fut.cancel()
        self._running.clear()
        self._edits.clear()

    def shutdown(self) -> None:
        """The window closes: nothing more is figured, and the thread is gone."""
        self._closed = True
        self.reset()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
