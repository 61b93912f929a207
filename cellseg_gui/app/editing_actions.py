"""The editor's toolbars, actions, Edit menu and keyboard shortcuts: what each button
and key calls on the :class:`~cellseg_gui.app.editing.Editor` (``connect_edit_actions``,
the editor's own wiring) and where the window places them (``place_edit_actions``).
Layout only; what the tools do is the editor's and core's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import QMainWindow, QMenu, QWidget

if TYPE_CHECKING:
    from cellseg_gui.app.editing import Editor


def connect_edit_actions(editor: Editor, host: QWidget) -> tuple[QAction, QAction, list[QShortcut]]:
    """Connect the toolbar's buttons to the editor and make the undo and redo actions and
    the 1-9 class shortcuts (active in ``host``'s window); returns those three."""
    tb = editor.toolbar
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
    class_shortcuts = []
    for k in range(1, 10):
        sc = QShortcut(QKeySequence(str(k)), host)
        sc.activated.connect(lambda k=k: tb.set_class(k))
        class_shortcuts.append(sc)
    return undo_action, redo_action, class_shortcuts


def place_edit_actions(window: QMainWindow, menu: QMenu, editor: Editor) -> None:
    """Put the edit toolbars at the top of ``window``, the undo, redo and one-shot
    actions in its Edit ``menu``, and the tool keys in its shortcuts."""
    tb = editor.toolbar
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
    window.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb.cleanup_bar)
    window.addActions(tb.shortcut_actions)
    for act in (editor.undo_action, editor.redo_action):
        window.addAction(act)
    menu.addAction(editor.undo_action)
    menu.addAction(editor.redo_action)
    menu.addSeparator()
    menu.addAction(tb.save)
    menu.addAction(tb.restore)
    menu.addSeparator()
    for act in (tb.fill_holes, tb.remove_specks, tb.smooth_all, tb.accept_all):
        menu.addAction(act)
    menu.addAction(tb.clear)
    menu.addAction(tb.new_mask)
