"""The editor's toolbars, actions, Edit menu and keyboard shortcuts: where each button
and key is placed and what it calls on the :class:`~cellseg_gui.app.editing.Editor`.
Layout only; what the tools do is the editor's and core's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut

if TYPE_CHECKING:
    from cellseg_gui.app.editing import Editor


def _menu(window: Any, title: str) -> Any:
    try:
        return window.menu(title)
    except Exception:  # noqa: BLE001 - an unknown menu name must not stop editing
        return None


def wire_edit_actions(editor: Editor) -> tuple[QAction, QAction, list[QShortcut]]:
    """Place the edit toolbars and menu entries and connect them; returns the undo and
    redo actions and the 1-9 class shortcuts."""
    w, tb = editor.window, editor.toolbar
    w.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
    w.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
    w.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb.cleanup_bar)
    w.addActions(tb.shortcut_actions)
    tb.toolChanged.connect(editor.set_tool)
    tb.sizeChanged.connect(lambda _s: editor.update_cursor())
    tb.smooth_all.triggered.connect(editor.smooth_all)
    tb.fill_holes.triggered.connect(editor.fill_holes)
    tb.remove_specks.triggered.connect(editor.remove_specks)
    tb.accept_all.triggered.connect(lambda: editor.accept_prediction(None))
    tb.clear.triggered.connect(editor.clear)
    tb.new_mask.triggered.connect(editor.new_mask)
    tb.save.triggered.connect(editor.save_current)
    tb.restore.triggered.connect(editor.restore_original)
    undo_action = editor.group.createUndoAction(editor, "Undo")
    undo_action.setShortcut(QKeySequence.StandardKey.Undo)
    redo_action = editor.group.createRedoAction(editor, "Redo")
    redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    menu = _menu(w, "Edit")
    for act in (undo_action, redo_action):
        w.addAction(act)
    if menu is not None:
        menu.addAction(undo_action)
        menu.addAction(redo_action)
        menu.addSeparator()
        menu.addAction(tb.save)
        menu.addAction(tb.restore)
        menu.addSeparator()
        for act in (tb.fill_holes, tb.remove_specks, tb.smooth_all, tb.accept_all):
            menu.addAction(act)
        menu.addAction(tb.clear)
        menu.addAction(tb.new_mask)
    class_shortcuts = []
    for k in range(1, 10):
        sc = QShortcut(QKeySequence(str(k)), w)
        sc.activated.connect(lambda k=k: tb.set_class(k))
        class_shortcuts.append(sc)
    return undo_action, redo_action, class_shortcuts
