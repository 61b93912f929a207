"""What each tool does on the canvas and each one-shot action does to the mask shown: the
brush and eraser stroke (painted as the mouse moves, one undo step on release), fill,
lasso, smooth, 'Paint prediction', accept-prediction (added on background only, see
``app/accept_cells``), the picker, and the clean-up,
clear, new-mask and restore actions. What a stroke paints is ``core/editing/edit_session``'s,
how pixels change is ``core/editing/edits``'s; a mixin of
:class:`~cellseg_gui.app.editing.Editor`, which owns the documents, undo stacks and the
toolbar these methods use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt

from cellseg_gui.app.accept_cells import accept_message, add_prediction, widened_note
from cellseg_gui.core.data.imageio import read_mask
from cellseg_gui.core.editing import edits as E
from cellseg_gui.core.editing.edit_session import fill_patch, paint_value, prediction_values
from cellseg_gui.core.editing.maskdoc import MaskDocument, has_original, original_path
from cellseg_gui.widgets.edit_toolbar import BRUSH_TOOLS, EditToolbar

if TYPE_CHECKING:
    from cellseg_gui.core.workspace import Workspace
    from cellseg_gui.widgets.canvas import ImageCanvas


def _is_left(mods: dict[str, Any] | None) -> bool:
    """Whether the canvas's mouse-event details (``{"buttons", "modifiers"}``) mean the
    left button."""
    return mods is not None and bool(mods["buttons"] & Qt.MouseButton.LeftButton)


class EditTools:
    """The tools and one-shot actions of the Editor (see the module docstring)."""

    workspace: Workspace
    canvas: ImageCanvas
    toolbar: EditToolbar
    tool: str
    current_instance: int | None

    # ------------------------------------------------------------------ tools
    def set_tool(self, tool: str) -> None:
        self._finish_stroke()
        self.tool = tool
        self.canvas.set_tool_active(tool != "pan")
        self.update_cursor()
        if self.toolbar.tool != tool:
            self.toolbar.set_tool(tool)

    def update_cursor(self) -> None:
        show = self.tool in BRUSH_TOOLS and not (
            self.tool in ("smooth", "accept") and self.toolbar.region_shape == "lasso"
        )
        self.canvas.set_brush_cursor(self.toolbar.brush_size / 2.0 if show else 0)

    @property
    def read_only(self) -> bool:
        return self.project is not None and self.project.read_only

    def _on_press(self, x: float, y: float, obj: dict[str, Any] | None = None) -> None:
        if self.tool == "pan" or not _is_left(obj):
            return
        if self.read_only:
            self._message("Read-only: this project is open in another window")
            return
        name = self.current
        doc = self.document(name, create=self.tool in ("brush", "lasso", "fill"))
        if doc is None:
            return
        self._pressed = True
        self._points = [(x, y)]
        tool = self.tool
        if tool in ("brush", "eraser"):
            value = paint_value(doc, self.tool, self.toolbar.current_class, x, y)
            if doc.is_instances and value:
                self.current_instance = value
            only_bg = self.toolbar.only_background.isChecked() and tool == "brush"
            self._stroke = E.Stroke(
                doc.data, self.toolbar.brush_size, value, only_background=only_bg
            )
            self._stroke_name = name
            self._stroke_move(x, y)
        elif tool == "fill":
            self._pressed = False
            patch = fill_patch(doc, self.toolbar.current_class, self.current_instance, x, y)
            self.push(name, patch, "Fill")
        elif tool == "picker":
            self._pressed = False
            self.pick(x, y)

    def _on_drag(self, x: float, y: float, obj: dict[str, Any] | None = None) -> None:
        if not self._pressed:
            return
        self._points.append((x, y))
        if self._stroke is not None:
            self._stroke_move(x, y)

    def _on_release(self, x: float, y: float, obj: dict[str, Any] | None = None) -> None:
        if not self._pressed:
            return
        self._pressed = False
        if self._stroke is not None:
            self._stroke_move(x, y)
            self._finish_stroke()
            return
        self._points.append((x, y))
        name, doc = self.current, self.document()
        if doc is None:
            return
        region = self._region(doc)
        if self.tool == "lasso":
            value = doc.next_instance_id() if doc.is_instances else self.toolbar.current_class
            only_bg = self.toolbar.only_background.isChecked()
            self.push(
                name, E.fill_region(doc.data, region, value, only_background=only_bg), "Lasso"
            )
        elif self.tool == "smooth":
            self.push(name, E.smooth(doc.data, self.toolbar.strength.value(), region), "Smooth")
        elif self.tool == "accept":
            self.accept_prediction(region)
        self._points = []

    def _region(self, doc: MaskDocument) -> E.Region | None:
        if self.tool == "lasso" or (
            self.tool in ("smooth", "accept") and self.toolbar.region_shape == "lasso"
        ):
            xs, ys = zip(*self._points, strict=True)
            return E.polygon_region(xs, ys, doc.shape)
        return E.brush_region(self._points, self.toolbar.brush_size, doc.shape)

    def _stroke_move(self, x: float, y: float) -> None:
        patch = self._stroke.move_to(x, y)
        if patch is not None:
            doc = self.workspace.document(self._stroke_name)
            y0, x0, y1, x1 = doc.refresh_display(*patch.bbox)
            if self._stroke_name == self.current:
                self.canvas.refresh_region("gt", y0, x0, y1, x1)

    def _finish_stroke(self) -> None:
        stroke, name = self._stroke, self._stroke_name
        self._stroke = self._stroke_name = None
        if stroke is None:
            return
        text = "Erase" if stroke.value == 0 else "Brush"
        self.push(name, stroke.finish(), text, applied=True)

    def pick(self, x: float, y: float) -> None:
        doc = self.document()
        value = E.pick(doc.data, x, y) if doc is not None else None
        if value is None:
            return
        if doc.is_instances:
            self.current_instance = value or None
            self.toolbar.set_class(1 if value else 0)
        else:
            self.toolbar.set_class(value)

    # ------------------------------------------------------------------ one-shot actions
    def _run(self, text: str, fn) -> bool:  # noqa: ANN001
        name, doc = self.current, self.document()
        if doc is None:
            return False
        return self.push(name, fn(doc), text)

    def smooth_all(self) -> bool:
        return self._run("Smooth all", lambda d: E.smooth(d.data, self.toolbar.strength.value()))

    def fill_holes(self) -> bool:
        return self._run("Fill holes", lambda d: E.fill_holes(d.data))

    def remove_specks(self) -> bool:
        n = self.toolbar.speck_size.value()
        return self._run("Remove specks", lambda d: E.remove_specks(d.data, n))

    def clear(self) -> bool:
        return self._run("Clear mask", lambda d: E.clear(d.data))

    def accept_prediction(self, region: E.Region | None = None) -> bool:
        name = self.current
        pred = self._prediction(name) if name else None
        if pred is None:
            self._message("There is no prediction for this image yet.")
            return False
        doc = self.document(name, create=True)
        if doc is None:
            return False
        if region is not None:  # 'Paint prediction': the prediction replaces what is there
            values = prediction_values(doc, pred.labels, pred.cells, region)
            return self.push(
                name, E.accept_prediction(doc.data, values, region), "Paint prediction"
            )
        # the whole image: added where the mask is background, never over what was drawn
        acc = add_prediction(doc.data, doc.mode, pred.labels, pred.cells)
        note = ""
        if acc.cells and acc.added:
            note = widened_note(doc.path, acc.first_id + acc.added - 1)
        pushed = self.push(name, E.accept_prediction(doc.data, acc.values), "Accept prediction")
        if pushed or not self.read_only:
            # the note first: a status bar cuts a long message at its end
            self._message((note.strip() + " " if note else "") + accept_message(name, acc))
        return pushed

    def new_mask(self) -> bool:
        """Start an empty mask (an image without one), or clear the existing one."""
        name = self.current
        if name is None or self.project is None:
            return False
        if self.workspace.document(name) is not None or (
            self.workspace.mask_path(name) and self.workspace.mask_path(name).exists()
        ):
            return self.clear()
        doc = self.document(name, create=True)
        if doc is None:
            return False
        self.save(name)
        return True

    def restore_original(self) -> bool:
        name, doc = self.current, self.document()
        if doc is None or not has_original(doc.path):
            self._message("This mask has not been changed since it was opened (no original kept).")
            return False

        original = doc.values_from_stored(read_mask(original_path(doc.path)))
        ok = self.push(name, E.accept_prediction(doc.data, original), "Restore original")
        self.save(name)
        return ok
