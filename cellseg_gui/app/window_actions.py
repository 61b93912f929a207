"""Menu actions, file dialogs, recent projects and drag and drop for the main window.

A mixin so main_window.py stays about composition; it uses only the window's own API
(open_project, add_images, overlays, canvas, image_list, docks)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog

from cellseg_gui.app import settings as S
from cellseg_gui.core.data.imageio import IMAGE_EXTS


class WindowActions:
    def _act(self, menu: str, text: str, slot, shortcut=None, checkable=False) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.setCheckable(checkable)
        act.triggered.connect(slot)
        self.menu(menu).addAction(act)
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        self._act("File", "&Open folder…", self._open_folder_dialog, QKeySequence.StandardKey.Open)
        self._act("File", "Open project &file…", self._open_file_dialog, "Ctrl+Shift+O")
        self.recent_menu = self.menu("File").addMenu("Open &recent")
        self._fill_recent()
        self._act("File", "Open &sample", self.open_sample, "Ctrl+Shift+E")
        self._act("File", "&Add images…", self._add_images_dialog, "Ctrl+I")
        self._act("File", "Save p&roject", self.save_project, "Ctrl+Shift+S")
        self.menu("File").addSeparator()
        from cellseg_gui.app.cell_export import export_cells_dialog

        self._act("File", "Export cells of this image…", lambda: export_cells_dialog(self, False))
        self._act(
            "File", "Export cells of all predicted images…", lambda: export_cells_dialog(self, True)
        )
        # what a biologist measures once the masks are corrected
        self._act("File", "Export cells of this image's mask…",
                  lambda: export_cells_dialog(self, False, "mask"))  # fmt: skip
        self._act("File", "Export cells of all masks…",
                  lambda: export_cells_dialog(self, True, "mask"))  # fmt: skip
        self.menu("File").addSeparator()
        self._act("File", "&Quit", self.close, "Ctrl+Q")
        o = self.overlays
        self._act("View", "Ground truth overlay", lambda: o.toggle("gt"), "Ctrl+G")
        self._act("View", "Prediction overlay", lambda: o.toggle("pred"), "Ctrl+P")
        self._act("View", "Difference (extra / missed)", lambda: o.toggle("diff"), "Ctrl+D")
        self._act("View", "Outline / filled", self._toggle_outline, "Ctrl+U")
        self.menu("View").addSeparator()
        self._act("View", "&Fit to window", self.canvas.fit, "Ctrl+0")
        self._act("View", "&1:1 pixels", self.canvas.one_to_one, "Ctrl+1")
        for a in (self.image_list.prev_action, self.image_list.next_action):
            self.menu("View").addAction(a)
            self.addAction(a)
        self.menu("View").addSeparator()
        self.docks_menu = self.menu("View").addMenu("&Panels")
        for dock in self.docks.values():
            self.docks_menu.addAction(dock.toggleViewAction())
        self._act("View", "&Reset layout", self._reset_layout, "Ctrl+Shift+R")
        from cellseg_gui.app.about import show_about
        from cellseg_gui.app.help import show_guide, show_shortcuts

        self._act("Help", "&Guide", lambda: show_guide(self), "F1")
        self._act("Help", "&Keyboard shortcuts", lambda: show_shortcuts(self), "Ctrl+/")
        self.menu("Help").addSeparator()
        self._act("Help", "&About cellseg-gui", lambda: show_about(self))

    def _toggle_outline(self) -> None:
        combo = self.overlays.styles["pred"]
        combo.setCurrentIndex(1 - combo.currentIndex())

    def _open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_project(folder)

    def _open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", "Projects (*.json)")
        if path:
            self.open_project(path)

    def _add_images_dialog(self) -> None:
        if self.project is None:
            return
        exts = " ".join(f"*{e}" for e in IMAGE_EXTS)
        paths, _ = QFileDialog.getOpenFileNames(self, "Add images", "", f"Images ({exts})")
        self.add_images(paths)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in S.recent_projects():
            self.recent_menu.addAction(path, lambda p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(self.recent_menu.actions()))

    def dragEnterEvent(self, ev) -> None:  # noqa: N802
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev) -> None:  # noqa: N802
        paths = [Path(u.toLocalFile()) for u in ev.mimeData().urls() if u.isLocalFile()]
        dirs = [p for p in paths if p.is_dir() or p.suffix == ".json"]
        if dirs:
            self.open_project(dirs[0])
        else:
            self.add_images([str(p) for p in paths if p.suffix.lower() in IMAGE_EXTS])
