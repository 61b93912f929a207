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
from concurrent.futures import Future

from PySide6.QtCore import QObject

from cellseg_gui.workers.background import BackgroundCalls

log = logging.getLogger(__name__)

AT_ONCE_BYTES = 64 * 1024 * 1024  # about 0.1 s of hashing
POLL_MS = 50


class RoleCheck(QObject):
    """Runs ``model_roles`` at once or on a thread; one check at a time, the latest wins."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._calls = BackgroundCalls("roles", POLL_MS, self)
        # the check under way: its future and its stop flag
        self._running: tuple[Future, threading.Event] | None = None

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
        stop = threading.Event()  # checked between files: closing waits one file at most
        fut = self._calls.submit(
            model_roles, meta, names, paths.get, stop.is_set,
            done=lambda fut: self._finished(fut, done),
        )  # fmt: skip
        self._running = (fut, stop)

    @property
    def busy(self) -> bool:
        return self._running is not None

    def cancel(self) -> None:
        """Forget the check under way (another model, another project)."""
        if self._running is not None:
            fut, stop = self._running
            stop.set()
            self._calls.forget(fut)
        self._running = None

    def _finished(self, fut: Future, done: Callable[[dict | None], None]) -> None:
        if self._running is not None and self._running[0] is fut:
            self._running = None
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
        self._calls.shutdown()
