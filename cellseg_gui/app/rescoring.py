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
from concurrent.futures import Future
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

from cellseg_gui.core.model.scoring import edited_mask_scores
from cellseg_gui.core.workspace import ShownPrediction, Workspace
from cellseg_gui.workers.background import BackgroundCalls

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
        self._running: dict[str, Future] = {}  # the figures under way per image
        self._calls = BackgroundCalls("rescore", POLL_MS, self)
        self._closed = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RESCORE_MS)
        self._timer.timeout.connect(self._start)

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
            old = self._running.pop(name, None)
            if old is not None:
                self._calls.forget(old)  # not started yet: its mask is gone; started: ignored
            edits = self._edits.get(name, 0)
            self._running[name] = self._calls.submit(
                edited_mask_scores, doc.stored(), doc.mode, pred.labels, pred.cells, meta,
                done=lambda fut, name=name, edits=edits, pred=pred: self._finished(
                    name, fut, edits, pred
                ),
            )  # fmt: skip

    def _finished(self, name: str, fut: Future, edits: int, pred: ShownPrediction) -> None:
        if self._running.get(name) is fut:
            del self._running[name]
        if fut.cancelled():
            return
        error = fut.exception()
        if error is not None:  # the list keeps the figures it had; say why
            log.warning("figuring %s's scores after an edit failed: %s", name, error,
                        exc_info=error)  # fmt: skip
            return
        if edits == self._edits.get(name, 0) and self.workspace.prediction(name) is pred:
            jaccard, ap50 = fut.result()
            self.workspace.set_scores(name, jaccard=jaccard, ap50=ap50)

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
        self._waiting.clear()
        self._calls.forget_all()
        self._running.clear()
        self._edits.clear()

    def shutdown(self) -> None:
        """The window closes: nothing more is figured, and the thread is gone."""
        self._closed = True
        self.reset()
        self._calls.shutdown()
