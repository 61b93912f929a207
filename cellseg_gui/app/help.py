"""Help > Guide (F1) and Help > Keyboard shortcuts, both made from the window's real menus
and actions, so what they name cannot drift from what the window has.

The guide is ``resources/help.md`` followed by a shortcuts table built from the actions;
menu paths in the guide are written ``**Menu > Item**`` and a test checks each against
the menu bar.
"""

from __future__ import annotations

from importlib import resources

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QMainWindow,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
)

__all__ = ["guide_markdown", "menu_paths", "shortcut_rows", "show_guide", "show_shortcuts"]


def _plain(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…. ")


def menu_paths(window: QMainWindow) -> list[tuple[str, QAction]]:
    """Every action in the menu bar as ("Menu > Submenu > Item", action)."""
    out: list[tuple[str, QAction]] = []

    def walk(menu: QMenu, prefix: str) -> None:
        for act in menu.actions():
            if act.isSeparator():
                continue
            path = f"{prefix} > {_plain(act.text())}"
            sub = act.menu()
            if sub is not None:
                walk(sub, path)
            else:
                out.append((path, act))

    for top in window.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu(), _plain(top.text()))
    return out


def shortcut_rows(window: QMainWindow) -> list[tuple[str, str]]:
    """(what, keys) for every action of the window that has a shortcut: the menus' first,
    by path, then the canvas tools and other window actions by name."""
    rows: list[tuple[str, str]] = []
    seen: set[int] = set()
    for path, act in menu_paths(window):
        keys = [s.toString(QKeySequence.SequenceFormat.NativeText) for s in act.shortcuts()]
        if keys:
            rows.append((path, ", ".join(keys)))
        seen.add(id(act))
    for act in window.findChildren(QAction):
        if id(act) in seen or not act.shortcuts() or not act.text():
            continue
        seen.add(id(act))
        keys = ", ".join(
            s.toString(QKeySequence.SequenceFormat.NativeText) for s in act.shortcuts()
        )
        rows.append((_plain(act.text()), keys))
    rows.append(("Choose class 1-9 to paint with", "1 ... 9"))
    return rows


def guide_markdown(window: QMainWindow) -> str:
    text = resources.files("cellseg_gui.resources").joinpath("help.md").read_text("utf-8")
    table = "\n".join(f"| {what} | `{keys}` |" for what, keys in shortcut_rows(window))
    return f"{text.rstrip()}\n\n## Keyboard shortcuts\n\n| Action | Keys |\n|---|---|\n{table}\n"


def _dialog(window: QMainWindow, title: str) -> tuple[QDialog, QVBoxLayout]:
    dlg = QDialog(window)
    dlg.setWindowTitle(title)
    return dlg, QVBoxLayout(dlg)


def show_guide(window: QMainWindow) -> QDialog:
    dlg, layout = _dialog(window, "cellseg-gui guide")
    browser = QTextBrowser(dlg)
    browser.setObjectName("guide")
    browser.setOpenExternalLinks(True)
    browser.setMarkdown(guide_markdown(window))
    layout.addWidget(browser)
    close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=dlg)
    close.rejected.connect(dlg.close)
    layout.addWidget(close)
    dlg.resize(720, 640)
    dlg.show()  # not modal: the guide stays open beside the window
    return dlg


def show_shortcuts(window: QMainWindow) -> QDialog:
    dlg, layout = _dialog(window, "Keyboard shortcuts")
    rows = shortcut_rows(window)
    table = QTableWidget(len(rows), 2, dlg)
    table.setObjectName("shortcuts")
    table.setHorizontalHeaderLabels(["Action", "Keys"])
    for r, (what, keys) in enumerate(rows):
        table.setItem(r, 0, QTableWidgetItem(what))
        table.setItem(r, 1, QTableWidgetItem(keys))
    table.resizeColumnsToContents()
    table.horizontalHeader().setStretchLastSection(True)
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    layout.addWidget(table)
    close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=dlg)
    close.rejected.connect(dlg.close)
    layout.addWidget(close)
    dlg.resize(560, 600)
    dlg.show()
    return dlg
