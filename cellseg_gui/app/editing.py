"""Mask editing in the main window: tools, undo per image, autosave.

The window makes one ``Editor(workspace, canvas, parent)`` and places its toolbars and
menu entries (``editing_actions.place_edit_actions``). The editor knows no window: it reads
and changes the :class:`~cellseg_gui.core.workspace.Workspace` (the open project, the image
looked at, its predictions, the open mask documents and which differ from their files),
drives the canvas through its API (mouse signals in image coordinates, ``set_tool_active``,
``set_brush_cursor``, ``refresh_region``) and says what happened through ``message``. The
window redraws the list, the ground truth and its title from the Workspace's announcements.

Design (see ``core/editing/edits.py`` and ``core/editing/maskdoc.py``; the tools themselves
are ``app/editing_tools.py``'s, saving ``app/mask_saving.py``'s):
- Each image being edited has a :class:`MaskDocument`; tools compute a ``Patch`` of it. A
  brush stroke paints as the mouse moves and becomes one ``QUndoCommand`` on release. Each
  image has its own ``QUndoStack`` in one ``QUndoGroup``, so Ctrl+Z undoes on the image shown.
- Instance masks are edited as instance ids: the brush extends the cell it starts in, or
  draws a new cell when it starts on background; the eraser, fill and lasso work on ids too;
  the class overlay (background / cell / boundary) is derived around each change.
- A change restarts a one-second timer; when it fires, every unsaved mask is copied and
  written on a background thread (atomic write), and its stack is marked clean if nothing
  changed meanwhile. Ctrl+S saves the current mask at once.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING

import shiboken6
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoGroup, QUndoStack

from cellseg_gui.app.editing_actions import connect_edit_actions
from cellseg_gui.app.editing_tools import EditTools
from cellseg_gui.app.mask_saving import MaskSaving
from cellseg_gui.app.rescoring import Rescorer
from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.journal import APPLY, REVERT, MaskJournal, journal_path
from cellseg_gui.core.editing.maskdoc import (
    MaskDocument,
    has_original,
)
from cellseg_gui.core.workspace import Change, ShownPrediction, Workspace
from cellseg_gui.widgets.edit_toolbar import EditToolbar
from cellseg_gui.workers.background import BackgroundCalls

if TYPE_CHECKING:
    from PySide6.QtWidgets import QWidget

    from cellseg_gui.core.data.project import Project
    from cellseg_gui.widgets.canvas import ImageCanvas

log = logging.getLogger(__name__)

UNDO_LIMIT = 200
AUTOSAVE_MS = 1000


class PatchCommand(QUndoCommand):
    """One edit (one stroke, one fill...) on one image's mask."""

    def __init__(self, editor: Editor, name: str, patch: E.Patch, text: str, applied: bool):
        super().__init__(text)
        self.editor, self.name, self.patch = editor, name, patch
        self._skip_redo = applied  # a stroke is already on the mask when it is pushed

    def redo(self) -> None:
        if self._skip_redo:
            self._skip_redo = False
        else:
            self.patch.apply(self.editor.workspace.document(self.name).data)
            self.editor.mask_changed(self.name, self.patch.bbox)
        self.editor.journal(self.name, APPLY, self.patch)

    def undo(self) -> None:
        self.patch.revert(self.editor.workspace.document(self.name).data)
        self.editor.mask_changed(self.name, self.patch.bbox)
        self.editor.journal(self.name, REVERT, self.patch)


class Editor(EditTools, MaskSaving, QObject):
    """Wires the edit toolbar and the canvas's mouse to mask documents and undo stacks."""

    saved = Signal(str)  # a mask file was written (name)
    message = Signal(str)  # something the user should read (the window's status bar)

    def __init__(self, workspace: Workspace, canvas: ImageCanvas, parent: QWidget) -> None:
        super().__init__(parent)
        self._host = parent  # the parent of the dialogs
        self.workspace = workspace  # the project, current image, predictions, documents
        self.ask_unsaved = self._ask_unsaved  # "elsewhere" | "discard" | "cancel"; tests replace
        self.choose_folder = self._choose_folder
        self.canvas = canvas
        self.stacks: dict[str, QUndoStack] = {}
        self.journals: dict[str, MaskJournal] = {}
        self.recovered: dict[str, str] = {}  # what opening found in crash journals, per image
        self.merged: dict[str, str] = {}  # masks merged with a change made outside, per image
        self.group = QUndoGroup(self)
        self.toolbar = EditToolbar(parent)
        self.tool = "pan"
        self.current_instance: int | None = None
        self._stroke: E.Stroke | None = None
        self._stroke_name: str | None = None
        self._points: list[tuple[float, float]] = []
        self._pressed = False
        self._saves = BackgroundCalls("mask-save", parent=self)
        self._pending: dict[str, Future] = {}  # the write of each mask under way
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self.autosave)
        self.rescorer = Rescorer(workspace, self)  # the list's J/AP after an edit
        self._build_ui()
        self._connect_canvas()

    # ------------------------------------------------------------------ set-up
    def _build_ui(self) -> None:
        self.undo_action, self.redo_action, self.class_shortcuts = connect_edit_actions(
            self, self._host
        )
        self.group.cleanChanged.connect(lambda _c: self._update_actions())
        self.group.indexChanged.connect(lambda _i: self._update_actions())
        self.workspace.subscribe(self._on_workspace_change)
        if self.project is not None:
            self._on_project_opened()
        if self.current:
            self._on_image_changed(self.current)
        self._update_actions()

    def _on_workspace_change(self, change: Change) -> None:
        if change.kind == "closing":
            self._finish_stroke()
            self.shutdown_docs()
            self.rescorer.reset()
        elif change.kind == "project":
            self._on_project_opened()
        elif change.kind == "current" and change.name is not None:
            self._on_image_changed(change.name)

    @property
    def docs(self) -> dict[str, MaskDocument]:
        """The open mask documents (the Workspace's, read-only here)."""
        return self.workspace.documents

    def _connect_canvas(self) -> None:
        c = self.canvas
        c.mousePressed.connect(self._on_press)
        c.mouseDragged.connect(self._on_drag)
        c.mouseReleased.connect(self._on_release)

    def may_close(self) -> bool:
        """The window is asked to close: save everything, and with masks that could not
        be saved ask what to do (False: stay open)."""
        self._finish_stroke()
        self.flush()
        return self._may_close()

    def closed(self) -> None:
        """The window closes: everything is saved (or given up), so nothing is left for a
        crash journal to recover."""
        self._close_journals()
        self.rescorer.shutdown()

    # ------------------------------------------------------------------ project access
    @property
    def project(self) -> Project | None:
        return self.workspace.project

    @property
    def current(self) -> str | None:
        return self.workspace.current

    def _image_shape(self, name: str) -> tuple[int, int] | None:
        """Height and width of ``name``: from the image shown, else the file's header."""
        if name == self.current and self.canvas.raw is not None:
            return self.canvas.raw.shape[:2]
        return self.workspace.image_shape(name)

    def _prediction(self, name: str) -> ShownPrediction | None:
        """The latest prediction of ``name`` (class map and cells), or None."""
        return self.workspace.prediction(name)

    # ------------------------------------------------------------------ documents
    def document(self, name: str | None = None, *, create: bool = False) -> MaskDocument | None:
        """The edit document of ``name`` (default: the shown image), loading it on first use.

        The canvas is handed the document's class map so that later strokes change the
        displayed array in place and only the touched rectangle needs recolouring.
        """
        name = name or self.current
        if name is None:
            return None
        doc = self.workspace.document(name)
        if doc is not None:
            return doc
        path = self.workspace.mask_path(name)
        if path is None and journal_path(self.workspace.new_mask_path(name)).is_file():
            create = True  # a new mask that a crash took before its first save
        if path is not None and path.exists():
            doc = MaskDocument.load(path, self.workspace.mask_mode, self.workspace.boundary_width)
        elif create:
            shape = self._image_shape(name)
            if shape is None or self.project is None:
                return None
            mode = self.workspace.mask_mode
            doc = MaskDocument.empty(
                path or self.workspace.new_mask_path(name),
                shape,
                "classes" if mode in ("auto", "binary") else mode,
                self.workspace.boundary_width,
            )
        else:
            return None
        self.workspace.add_document(name, doc)  # the window shows its class map
        self.stack(name)
        self._start_journal(name, doc)
        return doc

    def stack(self, name: str) -> QUndoStack:
        st = self.stacks.get(name)
        if st is None:
            st = QUndoStack(self.group)
            st.setUndoLimit(UNDO_LIMIT)
            st.cleanChanged.connect(lambda clean, n=name: self._set_image_modified(n, not clean))
            self.stacks[name] = st
            if name == self.current:
                self.group.setActiveStack(st)
        return st

    def mask_changed(self, name: str, bbox: tuple[int, int, int, int]) -> None:
        """After ``data`` changed in ``bbox``: update the overlay rectangle, schedule a save."""
        doc = self.workspace.document(name)
        y0, x0, y1, x1 = doc.refresh_display(*bbox)
        if name == self.current:
            self.canvas.refresh_region("gt", y0, x0, y1, x1)
        self._timer.start()
        self.rescorer.changed(name)

    def push(self, name: str, patch: E.Patch | None, text: str, *, applied: bool = False) -> bool:
        """Put an edit on ``name``'s undo stack (applying it unless ``applied``)."""
        if patch is None:
            return False
        if self.read_only:
            self._message("Read-only: this project is open in another window")
            return False
        self.stack(name).push(PatchCommand(self, name, patch, text, applied))
        if applied:
            self.mask_changed(name, patch.bbox)
        return True

    def shutdown(self) -> None:
        self._finish_stroke()
        self.flush()
        self._close_journals()
        self.rescorer.shutdown()
        self._saves.shutdown()

    # ------------------------------------------------------------------ window state
    def _on_project_opened(self) -> None:
        self.recovered.clear()
        self.toolbar.set_classes(self.workspace.paint_classes())
        self._restore_crashed()

    def shutdown_docs(self) -> None:
        """Another project is opening: save what is unsaved while this one is still open,
        forget its documents and stacks."""
        if self.docs:
            self.flush()
        self._close_journals()
        for st in self.stacks.values():
            self.group.removeStack(st)
            st.deleteLater()
        self.stacks.clear()
        self.workspace.forget_documents()

    def _on_image_changed(self, name: str) -> None:
        self._finish_stroke()
        self._pressed = False
        self.current_instance = None
        if name in self.stacks:
            self.group.setActiveStack(self.stacks[name])
        else:
            self.group.setActiveStack(None)
        self._update_actions()

    def _update_actions(self) -> None:
        doc = self.workspace.document(self.current)
        path = (
            doc.path
            if doc is not None
            else (self.workspace.mask_path(self.current) if self.current else None)
        )
        self.toolbar.restore.setEnabled(bool(path) and has_original(path))

    def _set_image_modified(self, name: str, modified: bool) -> None:
        # Undo stacks emit cleanChanged while Qt tears the window down on quit; the
        # toolbar may be gone by then (it printed "Internal C++ object already deleted").
        if not shiboken6.isValid(self):
            return
        self.workspace.set_modified(name, modified)
        if shiboken6.isValid(self.toolbar):
            self._update_actions()

    def _message(self, text: str) -> None:
        self.message.emit(text)


__all__ = ["Editor", "PatchCommand"]
