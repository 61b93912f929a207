"""How the main window draws the Workspace: the list, the canvas, the legend and the
title redraw from its announcements (``_on_workspace_change``), never pushed into by the
editor or the training controller; and the reads from disk that drawing needs (the image,
its ground truth). A mixin of :class:`~cellseg_gui.app.main_window.MainWindow`, which owns
the widgets (``image_list``, ``canvas``, ``legend``, ``overlays``) and the Workspace."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import shiboken6

from cellseg_gui.core.data.imageio import ImageReadError, read_image, read_mask
from cellseg_gui.core.palette import FN_COLOR, FN_WORDS, FP_COLOR, FP_WORDS
from cellseg_gui.core.workspace import Change, ShownPrediction, Workspace
from cellseg_gui.widgets.image_list import Entry, ImageList
from cellseg_gui.widgets.legend import Legend
from cellseg_gui.widgets.overlay_controls import OverlayControls

if TYPE_CHECKING:
    from PySide6.QtWidgets import QLabel

    from cellseg_gui.app.role_check import RoleCheck
    from cellseg_gui.core.data.project import Project
    from cellseg_gui.widgets.canvas import ImageCanvas


class WorkspaceView:
    """The window's drawing of the Workspace (see the module docstring)."""

    workspace: Workspace
    image_list: ImageList
    canvas: ImageCanvas | None
    legend: Legend
    overlays: OverlayControls
    role_check: RoleCheck
    role_note: QLabel  # in the status bar while ``role_check`` works on a thread
    _gt: dict[str, np.ndarray]
    _gt_cells: dict[str, int]  # cells in each instance mask read (``_read_gt``)
    _gt_ids: tuple[str, np.ndarray] | None  # the last instance mask read, for its ids

    # ------------------------------------------------------------------ the workspace
    @property
    def project(self) -> Project | None:
        return self.workspace.project

    @property
    def current_name(self) -> str | None:
        return self.workspace.current

    @property
    def predictions(self) -> dict[str, ShownPrediction]:
        return self.workspace.predictions

    def prediction(self, name: str) -> ShownPrediction | None:
        return self.workspace.prediction(name)

    def set_prediction(self, name: str, labels, probability=None, cells=None) -> None:
        """The latest prediction of ``name``: class map, probability of the chosen class
        and, from the model's own post-processing, its cells (int32 ids)."""
        self.workspace.set_prediction(name, labels, probability, cells)

    def _on_workspace_change(self, change: Change) -> None:
        # Undo stacks report "modified" while Qt tears the window down on quit; the list
        # may be gone by then ("Internal C++ object already deleted").
        if not shiboken6.isValid(self) or not shiboken6.isValid(self.image_list):
            return
        name, model = change.name, self.image_list.model_
        if change.kind == "project":
            self._show_project()
        elif change.kind == "split":
            self._refresh_splits()
        elif change.kind == "scores" and name is not None:
            scores = self.workspace.scores(name)
            model.update(name, val_jaccard=scores.jaccard, val_ap50=scores.ap50)
        elif change.kind == "modified" and name is not None:
            self.image_list.set_modified(name, name in self.workspace.modified)
            self.setWindowModified(bool(self.workspace.modified))
        elif change.kind == "mask" and name is not None:
            doc = self.workspace.document(name)
            self._gt.pop(name, None)
            self._gt_cells.pop(name, None)
            self._gt_ids = None
            model.update(name, has_gt=True)
            if name == self.current_name and doc is not None and doc.display is not self.canvas.gt:
                self.canvas.set_gt(doc.display, doc.data if doc.is_instances else None)
        elif change.kind == "prediction" and name is not None:
            self._show_prediction(name)
        elif change.kind == "models":
            self._show_model_roles()

    def _show_project(self) -> None:
        """Another project is open: its images in the list, its classes' colours and names
        on the canvas and in the legend (before the editor and the training controller
        hear of it, so what they restore or mark lands on the new list)."""
        project = self.project
        self._gt.clear()
        self._gt_cells.clear()
        self._gt_ids = None
        self.canvas.set_palette(project.colors(), [c.get("name", "") for c in project.classes])
        self._update_legend()
        self.image_list.model_.set_entries([
            Entry(n, has_gt=project.mask_path(n) is not None, split=project.get_split(n))
            for n in project.names
        ])  # fmt: skip
        self._show_model_roles()

    def _show_model_roles(self) -> None:
        """Each image's role for the active model ("train", "val", "unseen"), from what
        its bundle records; the project's split where no model says (see model_roles).
        Many large images not yet hashed are checked on a thread (``RoleCheck``)."""
        from cellseg_gui.core.model.bundle_meta import BundleError, read_bundle_meta

        self.role_check.cancel()
        self.role_note.hide()
        if self.project is None:
            return
        meta = None
        path = self.workspace.active_model
        if path:
            try:
                meta = read_bundle_meta(path)
            except (BundleError, OSError):
                meta = None
        if meta is None:
            self._set_model_roles(None)
            return
        project = self.project
        paths = {n: project.image_path(n) for n in project.names}

        def done(roles: dict | None) -> None:
            self.role_note.hide()
            if self.project is project and self.workspace.active_model == path:
                self._set_model_roles(roles)

        def waiting(size: int) -> None:
            self._set_model_roles(None)  # the project's split until the hashes are in
            self.role_note.setText(
                f"Checking which of the {len(paths)} images the model was trained on "
                f"({size / 1e6:.0f} MB to read)…"
            )
            self.role_note.show()

        self.role_check.check(meta, paths, done, waiting=waiting)

    def _set_model_roles(self, roles: dict | None) -> None:
        model = self.image_list.model_
        for e in model.entries:
            role = None if roles is None else roles.get(e.name)
            if role != e.model_role:
                model.update(e.name, model_role=role)

    def _show_prediction(self, name: str) -> None:
        pred = self.workspace.prediction(name)
        n_cells = None if pred is None or pred.cells is None else pred.n_cells
        self.image_list.model_.update(name, has_pred=pred is not None, n_cells=n_cells)
        if name == self.current_name:
            if pred is None:
                self.canvas.set_prediction(None, None)
            else:
                self.canvas.set_prediction(pred.labels, pred.probability, pred.cells)
            self._update_legend()
            self._say_cells(name)

    def _say_cells(self, name: str) -> None:
        """The predicted count, and beside it the mask's own where the mask is open and
        holds cells (instances): the two numbers a user compares."""
        pred = self.workspace.prediction(name)
        if pred is None or pred.cells is None:
            return
        text = f"{name}: {pred.n_cells} cells predicted"
        doc = self.workspace.document(name)
        if doc is not None:  # being edited: as it stands
            from cellseg_gui.core.data.masks import count_cells

            n_true = count_cells(doc.data) if doc.is_instances else None
        else:
            n_true = self._gt_cells.get(name)
        if n_true is not None:
            text += f", {n_true} in the mask"
        self.statusBar().showMessage(text)

    def _refresh_splits(self) -> None:
        """Show the project's train/val/excluded roles again (a first run writes its
        automatic split into the project)."""
        if self.project is None:
            return
        for e in self.image_list.model_.entries:
            role = self.project.get_split(e.name)
            if role != e.split:
                self.image_list.model_.update(e.name, split=role)

    # ------------------------------------------------------------------ reading
    def read_raw(self, name: str) -> np.ndarray:
        """The image as stored (for measurements: intensities in the file's units)."""
        return read_image(self.project.image_path(name), channels="keep")

    def _gt_ids_of(self, name: str) -> np.ndarray | None:
        """``name``'s cell ids when its mask is an instance mask: the document being edited
        as it stands, else the mask file (kept for the last image read)."""
        doc = self.workspace.document(name)
        if doc is not None:
            return doc.data if doc.is_instances else None
        if name not in self._gt_cells:  # not known as an instance mask
            return None
        if self._gt_ids is None or self._gt_ids[0] != name:
            try:
                self._gt_ids = (name, read_mask(self.project.mask_path(name)))
            except (ImageReadError, OSError, ValueError):
                return None
        return self._gt_ids[1]

    def _read_raw(self, name: str) -> np.ndarray:
        raw = read_image(self.project.image_path(name), channels="keep")
        if raw.ndim == 3 and raw.shape[2] not in (3, 4):
            raw = raw[..., 0]
        return raw

    def _read_gt(self, name: str, shape: tuple[int, int]) -> np.ndarray | None:
        from cellseg_gui.core.data.masks import (  # scipy: not needed at start-up
            count_cells,
            mask_to_classes,
        )

        path = self.project.mask_path(name)
        try:
            mask = read_mask(path)
            if mask.shape[:2] != shape:
                raise ImageReadError(path, f"mask is {mask.shape} but the image is {shape}")
            labels, _, mode = mask_to_classes(
                mask, self.project.mask_mode, self.project.boundary_width
            )
        except (ImageReadError, ValueError) as exc:
            self.image_list.model_.update(name, error=str(exc))
            return None
        self._gt[name] = labels
        if mode == "instances":  # the count the status bar sets beside the predicted one
            self._gt_cells[name] = count_cells(mask)
            self._gt_ids = (name, mask)
        return labels

    def _update_legend(self) -> None:
        if self.project is None:  # no project, no classes to name
            self.legend.set_entries([])
            return
        classes = self.project.classes if self.project else []
        names = [c.get("name", f"class {i}") for i, c in enumerate(classes)] or [
            "background",
            "cell",
            "boundary",
        ]
        cols = (
            self.project.colors() if self.project else [(0, 0, 0), (46, 204, 113), (241, 196, 15)]
        )
        entries = [(n, cols[i]) for i, n in enumerate(names) if i > 0]
        canvas = self.canvas  # None until finish_setup builds it
        if (
            canvas is not None
            and canvas.cells is not None
            and self.overlays.checks["pred"].isChecked()
        ):
            stripes = [tuple(int(v) for v in canvas.cell_lut[k, :3]) for k in (1, 2, 3, 4)]
            entries.append(("predicted cells (a colour each)", stripes))
        if self.overlays.checks["diff"].isChecked():
            entries += [(FP_WORDS, FP_COLOR), (FN_WORDS, FN_COLOR)]
        self.legend.set_entries(entries)
