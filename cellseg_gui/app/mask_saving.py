"""Saving what the editor changed, and never losing it: background saves, the crash
journal, merging a mask someone else changed, and the question on quitting with masks
that could not be saved. A mixin of :class:`cellseg_gui.app.editing.Editor`, which owns
the documents, undo stacks and journals these methods work on.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtWidgets import QFileDialog, QMessageBox

from cellseg_gui.core.data.imageio import ImageReadError, read_mask
from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.journal import APPLY, MaskJournal, journal_path, recover
from cellseg_gui.core.editing.maskdoc import (
    MaskConflict,
    MaskDocument,
    disk_hash,
    save_mask,
    save_mask_checked,
)

if TYPE_CHECKING:
    from PySide6.QtGui import QUndoStack

    from cellseg_gui.core.workspace import Workspace
    from cellseg_gui.workers.background import BackgroundCalls

log = logging.getLogger(__name__)


def _save_and_hash(path: Path, stored: np.ndarray, expected: str | None) -> str:
    """Write a mask on the saving thread if the file is still what this window knew
    (else MaskConflict), and return the written file's hash: the document and the crash
    journal name it as their new starting point."""
    return save_mask_checked(path, stored, expected)


class MaskSaving:
    """Saving, journalling and conflict handling for the Editor (see the module)."""

    docs: dict[str, MaskDocument]  # the Workspace's open documents (a read-only view)
    _saves: BackgroundCalls  # the saving thread
    _pending: dict[str, Future]  # the write of each mask under way
    stacks: dict[str, QUndoStack]
    journals: dict[str, MaskJournal]
    workspace: Workspace

    # ------------------------------------------------------------------ closing
    def unsaved(self) -> list[str]:
        """Images whose mask holds edits the file does not (a save failed)."""
        return [n for n, st in self.stacks.items() if not st.isClean() and n in self.docs]

    def _may_close(self) -> bool:
        """With masks that could not be saved: ask, and offer to save them elsewhere."""
        names = self.unsaved()
        if not names:
            return True
        choice = self.ask_unsaved(names)
        if choice == "discard":  # nothing of these edits is written after this
            for name in names:
                self.stacks[name].setClean()
            self._close_journals(names, discard=True)
            return True
        if choice == "elsewhere":
            folder = self.choose_folder()
            if folder is None:
                return False
            try:
                written = self.save_elsewhere(names, folder)
            except OSError as exc:
                self._message(f"Could not save the masks in {folder}: {exc.strerror or exc}")
                return self._may_close()  # ask again: nothing is lost on the way out
            for name in names:
                self.stacks[name].setClean()
            self._close_journals(names, discard=True)  # the edits are safe elsewhere
            log.info("unsaved masks written to %s", ", ".join(map(str, written)))
            return True
        return False

    def save_elsewhere(self, names: list[str], folder: Path) -> list[Path]:
        """Write these masks into ``folder`` under their own file names (atomic)."""
        written = []
        for name in names:
            doc = self.docs[name]
            target = Path(folder) / doc.path.name
            save_mask(target, doc.stored())
            written.append(target)
        return written

    def _ask_unsaved(self, names: list[str]) -> str:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        box = QMessageBox(self._host)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Unsaved masks")
        box.setText(f"{len(names)} mask(s) could not be saved: {shown}.")
        box.setInformativeText("Save them in another folder, or close and lose these edits?")
        elsewhere = box.addButton("Save elsewhere…", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard edits", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(elsewhere)
        box.exec()
        clicked = box.clickedButton()
        return (
            "elsewhere" if clicked is elsewhere else "discard" if clicked is discard else "cancel"
        )

    def _choose_folder(self) -> Path | None:
        folder = QFileDialog.getExistingDirectory(self._host, "Save the unsaved masks in")
        return Path(folder) if folder else None

    # ------------------------------------------------------------------ outside changes
    def _merge_outside_change(self, name: str) -> None:
        """The mask file changed under this window (another window, Fiji, a script):
        keep that version and put this window's changes back on top of it, then save."""
        doc = self.docs.get(name)
        if doc is None:
            return
        try:
            theirs_sha = disk_hash(doc.path)
            theirs = doc.values_from_stored(read_mask(doc.path))
            if disk_hash(doc.path) != theirs_sha:  # written again while being read
                self._message(f"{doc.path.name} is being written by another program; not saved")
                return
        except (ImageReadError, OSError) as exc:
            self._message(f"{doc.path.name} changed on disk and cannot be read ({exc}); not saved")
            return
        if theirs.shape != doc.data.shape:
            self._message(f"{doc.path.name} changed on disk to another size; this window's "
                          "edits are kept unsaved (File > Export cells or save elsewhere)")  # fmt: skip
            return
        ours = doc.data != doc.disk_data
        merged = theirs.copy()
        merged[ours] = doc.data[ours]
        patch = E.accept_prediction(doc.data, merged)
        journal = self.journals.get(name)
        if journal is not None:  # the journal now starts from their file
            onto_theirs = E.accept_prediction(theirs, merged)
            try:
                journal.restart(theirs_sha, [] if onto_theirs is None else [(APPLY, onto_theirs)])
            except OSError as exc:
                self.journals.pop(name, None)
                self._message(f"{name}: the crash journal stopped ({exc.strerror or exc})")
        if patch is not None:
            # Applied, not pushed: undoing it would quietly take the other writer's change
            # back out and save over it. The undo history before the merge no longer fits
            # the mask, so it goes.
            patch.apply(doc.data)
            self.mask_changed(name, patch.bbox)
        doc.disk_sha, doc.disk_data = theirs_sha, theirs
        self.stack(name).clear()
        n = int(ours.sum())
        note = (
            f"{doc.path.name} was changed outside this window while it was open: those "
            f"changes are kept, and this window's {n} changed pixel(s) were put back on top "
            "(where both changed a pixel, this window's value won; the undo history of this "
            "mask was cleared)"
        )
        self.merged[name] = note
        self._message(note)
        self.save(name)

    # ------------------------------------------------------------------ crash journal
    def _start_journal(self, name: str, doc: MaskDocument) -> None:
        """Replay what a crash left in the mask's journal, then journal from here on."""
        if self.read_only or not self.workspace.holds_lock:
            return  # one journal per mask: the window that holds the project keeps it
        # the document hashed the file when it read it: no second and third read here
        found = recover(doc.path, doc.shape, doc.disk_sha)
        journal = MaskJournal(doc.path, doc.shape)
        try:
            journal.begin(doc.disk_sha)
        except OSError as exc:
            self._message(f"{name}: no crash journal ({exc.strerror or exc}); saving as usual")
            journal = None
        if journal is not None:
            self.journals[name] = journal
        if found.changes:
            after = doc.data.copy()
            for op, patch in found.changes:
                (patch.apply if op == APPLY else patch.revert)(after)
            restored = E.accept_prediction(doc.data, after)
            if restored is not None:
                self.push(name, restored, "Strokes restored after a crash")
            self.recovered[name] = (
                f"{name}: {found.message}; restored (not saved yet, Ctrl+Z undoes it)"
            )
            self._message(self.recovered[name])
        elif found.message:
            self.recovered[name] = f"{name}: {found.message}"
            self._message(self.recovered[name])

    def journal(self, name: str, op: int, patch: E.Patch) -> None:
        """Make a change durable at once (called for every stroke, undo and redo)."""
        journal = self.journals.get(name)
        if journal is None:
            return
        try:
            journal.append(op, patch)
        except OSError as exc:
            self.journals.pop(name, None)
            self._message(f"{name}: the crash journal stopped ({exc.strerror or exc})")

    def _close_journals(self, names=None, *, discard: bool = False) -> None:
        for name in list(self.journals) if names is None else names:
            journal = self.journals.pop(name, None)
            if journal is not None:
                journal.close(discard=discard)

    def _restore_crashed(self) -> None:
        """Open every mask of the project that a crash left strokes for, so they are
        restored (and then saved) without waiting for the user to open each image."""
        if self.project is None or self.read_only or not self.workspace.holds_lock:
            return
        for name, pair in self.project.pairs.items():
            where = pair.mask_path or self.workspace.new_mask_path(name)
            if journal_path(where).is_file():
                self.document(name, create=pair.mask_path is None)

    # ------------------------------------------------------------------ saving
    def save(self, name: str, *, wait: bool = True) -> None:
        """Write ``name``'s mask now; mark its stack clean when the file holds its state."""
        doc = self.docs.get(name)
        if doc is None or self.read_only:
            return
        index = self.stack(name).index()
        if name in self._pending:  # one write of a mask at a time: a second one would
            # check the file against a hash that the first is about to change
            self._saves.finish(self._pending[name])
        journal = self.journals.get(name)
        upto = len(journal.records) if journal is not None else 0
        snapshot = doc.data.copy()

        def done(fut: Future) -> None:  # on the GUI thread (``BackgroundCalls``)
            if self._pending.get(name) is fut:
                del self._pending[name]
            self._on_save_done(name, index, fut, upto, snapshot)

        fut = self._saves.submit(_save_and_hash, doc.path, doc.stored(), doc.disk_sha, done=done)
        self._pending[name] = fut
        if wait:
            self._saves.finish(fut)

    def save_current(self) -> None:
        if self.current:
            self.save(self.current)

    def autosave(self) -> None:
        """Save every mask whose stack is not clean, on the saving thread."""
        for name, st in self.stacks.items():
            if not st.isClean() and name in self.docs:
                self.save(name, wait=False)

    def _on_save_done(
        self, name: str, index: int, fut: Future, upto: int, snapshot: np.ndarray
    ) -> None:
        error = fut.exception()  # waits for the write
        if isinstance(error, MaskConflict):
            self._merge_outside_change(name)
            return
        doc = self.docs.get(name)
        if error is None and doc is not None:
            doc.disk_sha, doc.disk_data = fut.result(), snapshot
        if error is not None:
            log.error("saving %s failed: %s", name, error)
            self._message(f"Could not save the mask of {name}: {error}")
            return
        journal = self.journals.get(name)
        if journal is not None:
            try:
                journal.saved(upto, fut.result())
            except OSError as exc:
                self.journals.pop(name, None)
                self._message(f"{name}: the crash journal stopped ({exc.strerror or exc})")
        st = self.stacks.get(name)
        if st is not None and st.index() == index and not st.isClean():
            st.setClean()
        self.saved.emit(name)

    def flush(self) -> None:
        """Save everything unsaved and wait for the writes (closing, tests)."""
        self._timer.stop()
        self.autosave()
        self._saves.finish_all()
