"""Main window: composes the image list, canvas and overlay panel; wires signals.

It holds no numerics: images come from core.data.imageio, masks become class maps through
core.data.masks, colours are applied by the canvas. The window is where the parts meet: it
owns the :class:`~cellseg_gui.core.workspace.Workspace`, makes the editor and the training
controller on it (neither knows the window), places their toolbars, menus and docks,
connects their signals to the status bar, and redraws the list, the canvas and its title
from the Workspace's announcements.

Two phases, so the window is on screen within a second: ``MainWindow(deferred=True)``
builds only the shell (menu bar, image list, display panel, status bar) without importing
pyqtgraph; ``finish_setup()``, called by the entry point once the shell has painted, adds
the canvas, actions, editing and training docks and restores the saved layout. Without
``deferred`` (tests, scripts) both phases run in the constructor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QTabBar,
    QToolBar,
    QVBoxLayout,
    QWidget,
)  # fmt: skip

from cellseg_gui.app import settings as S

if TYPE_CHECKING:
    from cellseg_gui.app.editing import Editor
    from cellseg_gui.app.training import TrainingController
from cellseg_gui.app.project_notices import ProjectLock, locked_notice, problems_notice
from cellseg_gui.app.role_check import RoleCheck
from cellseg_gui.app.window_actions import WindowActions
from cellseg_gui.app.workspace_view import WorkspaceView
from cellseg_gui.core.data.imageio import ImageReadError
from cellseg_gui.core.data.project import ProjectError, open_project
from cellseg_gui.core.workspace import Workspace
from cellseg_gui.widgets.image_list import ImageList
from cellseg_gui.widgets.legend import Legend
from cellseg_gui.widgets.overlay_controls import OverlayControls

log = logging.getLogger(__name__)
MENUS = ("File", "Edit", "View", "Train", "Help")
LAYOUT_VERSION = 2  # 2: the training settings got a dock of their own


class MainWindow(WorkspaceView, WindowActions, QMainWindow):
    currentImageChanged = Signal(str)  # after the image is on the canvas

    def __init__(self, parent: QWidget | None = None, *, deferred: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("cellseg-gui[*]")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.resize(1400, 900)
        # the open project, the image looked at and the latest predictions (core, no Qt);
        # the list and the canvas redraw from its announcements
        self.workspace = Workspace()
        self.workspace.subscribe(self._on_workspace_change)
        self.project_notice: QMessageBox | None = None  # what was wrong with the project file
        self.project_lock = ProjectLock()
        self.role_check = RoleCheck(self)  # each image's role for the active model
        self.role_note = QLabel()  # says so while that takes a while
        self.role_note.hide()
        # shown for as long as the project is read-only here (hover text replaces messages)
        self.read_only_label = QLabel("Read-only: open in another window")
        self.read_only_label.setStyleSheet("color: #c0392b; font-weight: bold; padding: 0 6px;")
        self.statusBar().addPermanentWidget(self.read_only_label)
        self.statusBar().addPermanentWidget(self.role_note)
        self.read_only_label.hide()
        self.lock_notice: QMessageBox | None = None
        self._gt: dict[str, np.ndarray] = {}
        self._gt_cells: dict[str, int] = {}
        self._gt_ids: tuple[str, np.ndarray] | None = None  # the last instance mask read
        self._menus: dict[str, QMenu] = {}
        self.docks: dict[str, QDockWidget] = {}

        self.canvas = None  # ImageCanvas, made by finish_setup (it imports pyqtgraph)
        # the controllers, made on the Workspace by finish_setup (app.editing, app.training)
        self.editor: Editor | None = None
        self.training: TrainingController | None = None
        self.ready = False
        self.image_list = ImageList(self)
        self.image_list.model_.loader = self._read_raw
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.image_list)
        self._placeholder = QLabel("Loading the image viewer…")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setStyleSheet("background: rgb(24, 24, 28); color: rgb(150, 150, 160);")
        self.splitter.addWidget(self._placeholder)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, 1150])
        self.setCentralWidget(self.splitter)

        self.overlays = OverlayControls()
        self.legend = Legend()
        panel = QWidget()
        lay = QVBoxLayout(panel)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.overlays)
        lay.addWidget(self.legend, 1)
        # a few rows: the training panel docked below gets the rest of the height
        panel.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        for name in MENUS:
            self._menus[name] = self.menuBar().addMenu("&" + name)
        self.add_dock("Display", panel, "right")
        self._update_legend()
        self.statusBar().showMessage("Starting…")
        geo = S.settings().value("geometry")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)  # the shell shows where the window was
        if not deferred:
            self.finish_setup()

    def finish_setup(self) -> None:
        """Second phase: canvas, actions, editing, training, saved dock layout."""
        if self.ready:
            return
        from cellseg_gui.widgets.canvas import ImageCanvas

        self.canvas = ImageCanvas(self)
        self.splitter.replaceWidget(1, self.canvas)
        self._placeholder.deleteLater()
        # the stretch factor lives in the widget's size policy: give it to the canvas, so
        # the docks added below take their room from the image, not from the list
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, max(1, self.splitter.width() - 250)])
        self._build_actions()
        self._wire()
        self.statusBar().showMessage("Open a folder of images (Ctrl+O) or the sample")
        # a message longer than the bar is cut at its end: the whole of it on hover
        bar = self.statusBar()
        bar.messageChanged.connect(lambda text: bar.setToolTip(text))
        self._install_hooks()
        self._restore_layout()
        self.ready = True

    # ------------------------------------------------------------------ contract API
    def menu(self, name: str) -> QMenu:
        if name not in self._menus:
            self._menus[name] = self.menuBar().addMenu("&" + name)
        return self._menus[name]

    def add_dock(
        self, title: str, widget: QWidget, area: str = "right", *, tabbed: bool = True
    ) -> QDockWidget:
        """Add a dock panel; its place persists between runs (objectName = title). A new
        side dock joins the others as a tab unless ``tabbed`` is False (the caller then
        arranges it)."""
        areas = {"right": Qt.DockWidgetArea.RightDockWidgetArea,
                 "left": Qt.DockWidgetArea.LeftDockWidgetArea,
                 "bottom": Qt.DockWidgetArea.BottomDockWidgetArea,
                 "top": Qt.DockWidgetArea.TopDockWidgetArea}  # fmt: skip
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock:{title}")
        dock.setWidget(widget)
        self.addDockWidget(areas.get(area, Qt.DockWidgetArea.RightDockWidgetArea), dock)
        others = [
            d for d in self.docks.values() if self.dockWidgetArea(d) == self.dockWidgetArea(dock)
        ]
        if tabbed and area in ("right", "left") and len(others) >= 2:
            self.tabifyDockWidget(others[-1], dock)
        self.docks[title] = dock
        # a dock moved between tab groups can leave the old group's tab bar on screen
        dock.dockLocationChanged.connect(
            lambda _area: QTimer.singleShot(0, self, self._hide_stale_tab_bars)
        )
        if hasattr(self, "docks_menu"):
            self.docks_menu.addAction(dock.toggleViewAction())
        return dock

    def open_project(self, path: str | Path) -> bool:
        """Open a folder or project file; a dialog says why when it cannot be opened."""
        try:
            project = open_project(path)
        except (ProjectError, OSError) as exc:
            QMessageBox.warning(self, "Cannot open project", str(exc))
            return False
        if self.editor is not None and not self.editor.may_close():
            return False  # masks that could not be saved: the user chose to stay
        self.workspace.close()  # the editor saves the last project's masks under its lock
        project.read_only = not self.project_lock.acquire(project.folder)
        self.workspace.holds_lock = self.project_lock.held
        ro = " (read-only: open in another window)" if project.read_only else ""
        self.read_only_label.setVisible(project.read_only)
        self.setWindowTitle(f"{project.name}{ro} — cellseg-gui[*]")
        if (project.folder / "cellseg-project.json").exists() or project.pairs:
            S.add_recent(project.folder)
            self._fill_recent()
        # said before the editor hears of the project, so what it restores after a crash
        # is the message left on the status bar
        self.statusBar().showMessage(f"{project.folder}: {len(project.names)} images", 5000)
        if project.problems:
            self.project_notice = problems_notice(self, project)
            self.statusBar().showMessage(project.problems[0], 15000)
        if self.ready:  # the editor exists once the window is built
            self.editor.toolbar.setEnabled(not project.read_only)
        self.workspace.open(project)  # the list, palette and legend redraw from the news
        entries = self.image_list.model_.entries
        if project.read_only:
            self.lock_notice = locked_notice(
                self, project, self.project_lock.holder, self.edit_anyway
            )
        if entries:
            self.show_image(entries[0].name)
        return True

    # ------------------------------------------------------------------ one window per project
    def edit_anyway(self) -> None:
        """Leave read-only although another window has the project."""
        if self.project is None:
            return
        self.project.read_only = False
        self.read_only_label.hide()
        if self.editor is not None:
            self.editor.toolbar.setEnabled(True)
        self.setWindowTitle(f"{self.project.name} — cellseg-gui[*]")

    @property
    def holds_project_lock(self) -> bool:
        """Whether this window holds the open project's lock (the crash journals are
        kept by the window that does, one per mask)."""
        return self.project_lock.held

    def show_image(self, name: str) -> bool:
        if self.project is None or name not in self.project.pairs:
            return False
        try:
            raw = self._read_raw(name)
        except ImageReadError as exc:
            self.image_list.model_.update(name, error=str(exc))
            self.statusBar().showMessage(str(exc), 8000)
            self.image_list.select(name)
            return False
        self.workspace.set_current(name)
        self.canvas.set_image(raw)
        doc = self.workspace.document(name)  # being edited: its class map, changed in place
        gt = doc.display if doc is not None else self._gt.get(name)
        if gt is None and self.project.mask_path(name) is not None:
            gt = self._read_gt(name, raw.shape[:2])
        self.canvas.set_gt(gt, self._gt_ids_of(name))
        pred = self.workspace.prediction(name)
        if pred is None:
            self.canvas.set_prediction(None, None)
        else:
            self.canvas.set_prediction(pred.labels, pred.probability, pred.cells)
        self._update_legend()
        self.image_list.select(name)
        self.currentImageChanged.emit(name)
        self._say_cells(name)
        return True

    # ------------------------------------------------------------------ actions
    def _wire(self) -> None:
        o, c = self.overlays, self.canvas
        o.visibilityChanged.connect(c.set_layer_visible)
        o.visibilityChanged.connect(lambda *_: self._update_legend())
        o.opacityChanged.connect(c.set_opacity)
        o.filledChanged.connect(c.set_filled)
        c.info.connect(lambda text: self.statusBar().showMessage(text))
        self.image_list.currentNameChanged.connect(
            lambda n: n != self.current_name and self.show_image(n)
        )
        self.image_list.splitRequested.connect(self.set_split)

    def set_split(self, names: list[str], role: str) -> None:
        try:
            self.workspace.set_split(names, role)  # the list redraws from the news
        except OSError as exc:
            QMessageBox.warning(self, "Cannot save project", str(exc))

    def save_project(self) -> None:
        if self.project is not None:
            try:
                self.project.save()
            except OSError as exc:
                QMessageBox.warning(self, "Cannot save project", str(exc))

    def open_sample(self) -> bool:
        from cellseg_gui.core.data.sample import make_sample

        self.statusBar().showMessage("Generating the sample images…")
        return self.open_project(make_sample())

    def add_images(self, paths: list[str]) -> None:
        if self.project is None or not paths:
            return
        current = self.current_name
        self.project.add_images(paths)
        self.project.save()
        self.open_project(self.project.folder)
        if current:
            self.show_image(current)

    # ------------------------------------------------------------------ drag and drop
    # ------------------------------------------------------------------ hooks and layout
    def _install_hooks(self) -> None:
        """Make the editor and the training controller on the Workspace, place their
        toolbars, menus and docks, and connect what they say to the status bar."""
        from cellseg_gui.app.editing import Editor
        from cellseg_gui.app.editing_actions import place_edit_actions
        from cellseg_gui.app.training import TrainingController
        from cellseg_gui.app.training_layout import arrange_training_docks

        editor = Editor(self.workspace, self.canvas, self)
        place_edit_actions(self, self.menu("Edit"), editor)
        editor.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.editor = editor
        training = TrainingController(self.workspace, self, save_edits=editor.flush)
        arrange_training_docks(self, training.panel, training.models, training.advice,
                               training.noisy, training.plots, training.lr_plot,
                               training.gallery)  # fmt: skip
        # View > Panels: the panels, then the edit toolbars (a toolbar closed from its
        # context menu comes back from here)
        self.docks_menu.addSeparator()
        for bar in (editor.toolbar, editor.toolbar.cleanup_bar):
            self.docks_menu.addAction(bar.toggleViewAction())
        menu = self.menu("Train")
        for i, action in enumerate(training.panel.actions_list):
            if i in (3, 6):
                menu.addSeparator()
            menu.addAction(action)
        training.status.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        training.panelWanted.connect(lambda title: self.docks[title].raise_())
        training.showRequested.connect(self._show_region)
        self.training = training

    def _show_region(self, name: str, region: tuple[int, int, int, int] | None) -> None:
        """Show ``name``, zoomed to ``region`` (y, x, h, w) when one is given."""
        if self.show_image(name) and region is not None:
            y, x, h, w = region
            self.canvas.zoom_to(y, x, y + h, x + w)

    def _default_sizes(self) -> None:
        """Give the image most of the room: bottom panels short, side panels narrow."""
        area = Qt.DockWidgetArea
        for where, size, orient in ((area.BottomDockWidgetArea, 230, Qt.Orientation.Vertical),
                                    (area.RightDockWidgetArea, 360, Qt.Orientation.Horizontal)):  # fmt: skip
            docks = [d for d in self.docks.values() if self.dockWidgetArea(d) == where]
            if docks:
                self.resizeDocks(docks[:1], [size], orient)

    def _restore_layout(self) -> None:
        if self.isVisible():
            # docks and toolbars added to a window already on screen (the shell shows
            # before them) are shown by a queued call: show them now, or the default layout
            # that View > Reset layout restores would record them all as hidden
            for bar in self.findChildren(
                QToolBar, options=Qt.FindChildOption.FindDirectChildrenOnly
            ):
                bar.show()
            for dock in self.docks.values():
                dock.show()
        self._default_sizes()
        self._default_state = self.saveState(LAYOUT_VERSION)
        state = S.settings().value("state")  # the geometry was restored with the shell
        if isinstance(state, QByteArray):
            self.restoreState(state, LAYOUT_VERSION)
        self._hide_stale_tab_bars()

    def _reset_layout(self) -> None:
        self.restoreState(self._default_state, LAYOUT_VERSION)
        self.resize(1400, 900)
        self._hide_stale_tab_bars()

    def _hide_stale_tab_bars(self) -> None:
        """Hide the tab bars of tab groups that no longer exist. Each restoreState (a
        start with a saved layout, View > Reset layout) and each dock tabbed onto a group
        leaves Qt's tab bar of the group before it on screen, at its old place: a user saw
        a second "Settings | Models | Advice" bar across the Models panel, one more with
        each reset. A bar is kept when its tabs are a group's docks as they stand, the
        newest bar of that group only."""
        groups = set()
        for dock in self.docks.values():
            if not dock.isHidden():
                titles = [dock.windowTitle()] + [
                    d.windowTitle() for d in self.tabifiedDockWidgets(dock)
                ]
                groups.add(frozenset(titles))
        live: dict[frozenset, QTabBar] = {}
        bars = [
            b
            for b in self.findChildren(QTabBar, options=Qt.FindChildOption.FindDirectChildrenOnly)
            if b.count()
        ]
        for bar in bars:  # in the order they were made: the newest of a group wins
            tabs = frozenset(bar.tabText(i) for i in range(bar.count()))
            if tabs in groups:
                old = live.get(tabs)
                if old is not None:
                    old.hide()
                live[tabs] = bar
            else:
                bar.hide()

    def save_layout(self) -> None:
        if not self.ready:  # closed before the docks existed: keep the saved layout
            return
        s = S.settings()
        s.setValue("geometry", self.saveGeometry())
        s.setValue("state", self.saveState(LAYOUT_VERSION))
        s.sync()

    def closeEvent(self, ev) -> None:  # noqa: N802
        # asking changes nothing, so a No to stopping the job leaves the masks as they
        # were; the editor then saves, and asks about masks that could not be saved (its
        # Discard and Save elsewhere act at once, so it is asked last)
        if self.training is not None and not self.training.may_close():
            ev.ignore()
            return
        if self.editor is not None and not self.editor.may_close():
            ev.ignore()
            return
        if self.training is not None:
            self.training.shutdown()
        if self.editor is not None:
            self.editor.closed()
        self.role_check.shutdown()
        self.save_layout()
        self.project_lock.release()
        super().closeEvent(ev)

    def screenshot(self, path: str | Path) -> bool:
        """Render the window (thumbnails made first) into a PNG."""
        self.image_list.model_.make_all()
        return self.grab().save(str(path))
