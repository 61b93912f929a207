"""What each image was to the active model, worked out off the GUI thread when it takes long.

The list's "train / val / unseen" beside each image comes from the SHA-256 of the image
files the model's bundle records (``core.model.image_roles``). Hashing runs at about
600 MB/s here: the 15 usiigaci images (32 MB) take 0.05 s, but a project of a thousand
8 MB images would freeze the window for about 13 s when its model is chosen. Up to
``AT_ONCE_BYTES`` of files not yet hashed are read at once, as before; more are hashed on
a background thread while the list keeps the project's split, and the roles arrive when
the hashes do, unless the model or the project changed meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from PySide6.QtCore import QObject, QTimer

from cellseg_gui.workers.gui_gc import collect_on_gui_thread

log = logging.getLogger(__name__)

AT_ONCE_BYTES = 64 * 1024 * 1024  # about 0.1 s of hashing
POLL_MS = 50


class RoleCheck(QObject):
    """Runs ``model_roles`` at once or on a thread; one check at a time, the latest wins."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._executor: ThreadPoolExecutor | None = None
        # the check under way: its future, what to call with the roles, its stop flag
        self._running: tuple[Future, Callable[[dict | None], None], threading.Event] | None = None
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._collect)

    def check(
        self,
        meta: dict,
        paths: dict[str, str | None],
        done: Callable[[dict | None], None],
        *,
        waiting: Callable[[int], None] | None = None,
    ) -> None:
        """``done(roles)`` with each image's role (None: the bundle records none), now
        when little is left to hash, else later; ``waiting(bytes)`` is told first then."""
        from cellseg_gui.core.model.image_roles import model_roles, unhashed_bytes

        self.cancel()
        names = list(paths)
        size = unhashed_bytes(meta, names, paths.get)
        if size <= AT_ONCE_BYTES:
            done(model_roles(meta, names, paths.get))
            return
        if waiting is not None:
            waiting(size)
        if self._executor is None:
            collect_on_gui_thread()  # no Qt object may be collected on that thread
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roles")
        stop = threading.Event()  # checked between files: closing waits one file at most
        fut = self._executor.submit(model_roles, meta, names, paths.get, stop.is_set)
        self._running = (fut, done, stop)
        self._poll.start()

    @property
    def busy(self) -> bool:
        return self._running is not None

    def cancel(self) -> None:
        """Forget the check under way (another model, another project)."""
        if self._running is not None:
            self._running[2].set()
            self._running[0].cancel()
        self._running = None
        self._poll.stop()

    def _collect(self) -> None:
        if self._running is None or not self._running[0].done():
            return
        fut, done, _stop = self._running
        self._running = None
        self._poll.stop()
        if fut.cancelled():
            return
        error = fut.exception()
        if error is not None:  # the project's split stays, as for a model that says none
            log.warning("working out the images' roles failed: %s", error, exc_info=error)
            done(None)
            return
        done(fut.result())

    def shutdown(self) -> None:
        self.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
